//! The device cookie (OWASP's "device cookies" against account lockout): a signed cookie
//! set at each successful sign-in, naming the member and a random device id. Presenting
//! it, a browser that signed in before keeps its own failure budget instead of the
//! account's and address's (`domain::team::sign_in`).

use actix_web::cookie::{time, Cookie, CookieJar, Key, SameSite};
use actix_web::HttpRequest;

use crate::domain::team::Device;
use crate::random::random_token;

pub const DEVICE_COOKIE: &str = "referdesk_device";

/// How long a browser stays known; the cookie's own expiry and the signed issue time
/// both say so, so an old copy is refused even if a browser keeps it.
const LIFETIME_DAYS: i64 = 365;

/// Marks the signed value as a device cookie's, so no other value signed with the same
/// key (the session cookie's) can stand in for one.
const PURPOSE: &str = "device";

/// The device cookie this request carries, if its signature holds and it is not too old.
pub fn from_request(req: &HttpRequest, key: &Key) -> Option<Device> {
    let mut jar = CookieJar::new();
    jar.add_original(req.cookie(DEVICE_COOKIE)?);
    let value = jar.signed(key).get(DEVICE_COOKIE)?.value().to_string();
    let mut parts = value.split('.');
    let (purpose, member_id, issued, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let issued = chrono::DateTime::from_timestamp(issued.parse().ok()?, 0)?;
    let fresh = chrono::Utc::now() - issued < chrono::Duration::days(LIFETIME_DAYS);
    if purpose != PURPOSE || !fresh || parts.next().is_some() {
        return None;
    }
    Some(Device {
        member_id: member_id.parse().ok()?,
        id: id.to_string(),
    })
}

/// A new device cookie for a member who just signed in (a new device id each time).
pub fn issue(member_id: i64, key: &Key, secure: bool) -> Cookie<'static> {
    let value = format!(
        "{PURPOSE}.{member_id}.{}.{}",
        chrono::Utc::now().timestamp(),
        random_token(32)
    );
    let mut jar = CookieJar::new();
    jar.signed_mut(key).add(
        Cookie::build(DEVICE_COOKIE, value)
            // Only the sign-in form needs it.
            .path("/login")
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Lax)
            .max_age(time::Duration::days(LIFETIME_DAYS))
            .finish(),
    );
    jar.get(DEVICE_COOKIE)
        .cloned()
        .unwrap_or_else(|| Cookie::new(DEVICE_COOKIE, ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn signed(value: String, key: &Key) -> Cookie<'static> {
        let mut jar = CookieJar::new();
        jar.signed_mut(key).add(Cookie::new(DEVICE_COOKIE, value));
        jar.get(DEVICE_COOKIE).cloned().unwrap()
    }

    fn read(cookie: Cookie<'static>, key: &Key) -> Option<(i64, String)> {
        let req = TestRequest::default().cookie(cookie).to_http_request();
        from_request(&req, key).map(|device| (device.member_id, device.id))
    }

    #[test]
    fn only_an_unaltered_recent_device_cookie_of_this_server_counts() {
        let key = Key::generate();
        let cookie = issue(42, &key, true);
        assert!(cookie.http_only().unwrap_or(false) && cookie.secure().unwrap_or(false));
        let (member_id, id) = read(cookie.clone(), &key).expect("its own cookie");
        assert_eq!(member_id, 42);
        assert_eq!(id.len(), 32);
        assert_ne!(
            read(issue(42, &key, true), &key).unwrap().1,
            id,
            "a new id each time"
        );

        assert_eq!(
            read(cookie.clone(), &Key::generate()),
            None,
            "another server's key"
        );
        let forged = cookie.value().replacen(".42.", ".43.", 1);
        assert_eq!(read(Cookie::new(DEVICE_COOKIE, forged), &key), None, "altered");
        let now = chrono::Utc::now().timestamp();
        let old = now - (LIFETIME_DAYS + 1) * 24 * 3600;
        assert_eq!(
            read(signed(format!("device.42.{old}.abc"), &key), &key),
            None,
            "too old"
        );
        assert_eq!(
            read(signed(format!("session.42.{now}.abc"), &key), &key),
            None,
            "purpose"
        );
        assert_eq!(
            read(signed(format!("device.42.{now}.abc.x"), &key), &key),
            None,
            "shape"
        );
        assert_eq!(
            read(signed(format!("device.42.{now}.abc"), &key), &key),
            Some((42, "abc".to_string()))
        );
    }
}
