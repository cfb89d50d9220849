//! Sign-in, sign-out, first-run setup and the program switcher.

use actix_session::{Session, SessionExt};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::sessions::MEMBER_ID_KEY;
use crate::domain::team::{self, NewMember, Role, SignIn};
use crate::error::Error;
use crate::web::access::PROGRAM_ID_KEY;
use crate::web::context::{Page, PublicPage};
use crate::web::forms::{rerender, FormErrors};
use crate::web::{csrf, device, redirect, render, render_status, safe_next};
use crate::AppState;

#[derive(Template)]
#[template(path = "auth/login.html")]
struct LoginPage {
    csrf: String,
    email: String,
    next: String,
    error: Option<String>,
    notice: Option<String>,
    /// A field left empty: both are named at once, and nothing is tried.
    errors: FormErrors,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

pub async fn login_form(
    req: HttpRequest,
    page: PublicPage,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, Error> {
    let next = safe_next(query.next.as_deref()).to_string();
    if page.session.get::<i64>(MEMBER_ID_KEY).ok().flatten().is_some() {
        let _ = req;
        return Ok(redirect(&next));
    }
    render(&LoginPage {
        csrf: page.csrf,
        email: String::new(),
        next,
        error: None,
        errors: FormErrors::default(),
        notice: query
            .signed_out
            .as_ref()
            .map(|_| "You have been signed out.".to_string()),
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: PublicPage,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, Error> {
    let LoginForm {
        email,
        password,
        next,
    } = form.into_inner();
    let next = safe_next(next.as_deref()).to_string();
    let missing = team::missing_sign_in_fields(&email, &password);
    if let Err(refused) = Error::refuse_any(missing) {
        let errors = FormErrors::from_error(refused)?;
        return render_status(
            errors.status(),
            &LoginPage {
                csrf: page.csrf,
                email,
                next,
                error: None,
                notice: None,
                errors,
            },
        );
    }
    let address = page.address.clone();
    let attempt_email = email.clone();
    let known_device = device::from_request(&req, &state.cookie_key);
    let outcome = db::run(&state.pool, move |conn| {
        team::sign_in(conn, &attempt_email, &password, &address, known_device.as_ref())
    })
    .await?;
    let again = |status: StatusCode, message: &str| {
        render_status(
            status,
            &LoginPage {
                csrf: page.csrf.clone(),
                email: email.clone(),
                next: next.clone(),
                error: Some(message.to_string()),
                notice: None,
                errors: FormErrors::default(),
            },
        )
    };
    match outcome {
        SignIn::Ok(member) => {
            sign_in_session(&page.session, member.id)?;
            tracing::info!(member_id = member.id, "signed in");
            let mut response = redirect(&next);
            let cookie = device::issue(member.id, &state.cookie_key, state.config.serves_https());
            response
                .add_cookie(&cookie)
                .map_err(|error| Error::Internal(anyhow::anyhow!("device cookie: {error}")))?;
            Ok(response)
        }
        SignIn::Refused => again(StatusCode::UNAUTHORIZED, "The email or password is incorrect."),
        SignIn::Throttled { retry_after_secs } => {
            let minutes = retry_after_secs.div_ceil(60);
            let mut response = again(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed sign-in attempts. Try again in {minutes} minute{}. \
                     A browser you have signed in with before can still sign in.",
                    if minutes == 1 { "" } else { "s" }
                ),
            )?;
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(retry_after_secs),
            );
            Ok(response)
        }
    }
}

/// Signs the member in on this session, after whatever proved who they are (password,
/// setup link, password link): a new session id, so a cookie planted before sign-in is
/// worthless after it, and a new CSRF token, so is a token seen before.
pub fn sign_in_session(session: &Session, member_id: i64) -> Result<(), Error> {
    session.renew();
    session
        .insert(MEMBER_ID_KEY, member_id)
        .map_err(|error| Error::Internal(anyhow::anyhow!("session: {error}")))?;
    csrf::rotate(session);
    Ok(())
}

pub async fn logout(req: HttpRequest) -> HttpResponse {
    // Purging deletes the server-side row: the old cookie stops working everywhere.
    req.get_session().purge();
    redirect("/login?signed_out=1")
}

#[derive(Template)]
#[template(path = "auth/setup.html")]
struct SetupPage {
    csrf: String,
    token: String,
    email: String,
    name: String,
    errors: FormErrors,
    message: Option<String>,
}

#[derive(Deserialize)]
pub struct SetupQuery {
    #[serde(default)]
    token: String,
}

pub async fn setup_form(
    state: web::Data<AppState>,
    page: PublicPage,
    query: web::Query<SetupQuery>,
) -> Result<HttpResponse, Error> {
    let token = query.into_inner().token;
    let check = token.clone();
    db::run(&state.pool, move |conn| {
        team::find_one_time_token(conn, &check, team::LinkPurpose::Setup)
    })
    .await?;
    render(&SetupPage {
        csrf: page.csrf,
        token,
        email: String::new(),
        name: String::new(),
        errors: FormErrors::default(),
        message: None,
    })
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirmation: String,
}

pub async fn setup(
    state: web::Data<AppState>,
    page: PublicPage,
    form: web::Form<SetupForm>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    let mut problems = team::new_password_problems("password", &form.password, &form.password_confirmation);
    let new = Error::collect(
        &mut problems,
        NewMember::parse(
            &form.email,
            &form.name,
            Role::Admin.as_str(),
            Some(&form.password),
        ),
    )?;
    let parsed = Error::checked(new, problems);
    let result = match parsed {
        Ok(new) => {
            let token = form.token.clone();
            let address = Some(page.address.clone());
            db::run(&state.pool, move |conn| {
                team::complete_setup(conn, &token, new, address)
            })
            .await
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(member) => {
            sign_in_session(&page.session, member.id)?;
            crate::web::context::flash(&page.session, "success", "Welcome! Your admin account is ready.");
            Ok(redirect("/"))
        }
        Err(error) => rerender(error, |errors| SetupPage {
            csrf: page.csrf,
            token: form.token,
            email: form.email,
            name: form.name,
            errors,
            message: None,
        }),
    }
}

#[derive(Deserialize)]
pub struct SwitchForm {
    program: i64,
    next: Option<String>,
    /// Set by the "customer in another program" page: go to `next` itself, which is known
    /// to exist in the program switched to.
    #[serde(default)]
    open: Option<String>,
}

pub async fn switch_program(page: Page, form: web::Form<SwitchForm>) -> Result<HttpResponse, Error> {
    let program = page
        .programs
        .iter()
        .find(|program| program.id == form.program)
        .ok_or(Error::NotFound)?;
    page.session
        .insert(PROGRAM_ID_KEY, program.id)
        .map_err(|error| Error::Internal(anyhow::anyhow!("session: {error}")))?;
    page.flash("info", format!("Now working in {}.", program.name));
    // Pages of one program's records make no sense in another: go to the section's list.
    let next = safe_next(form.next.as_deref());
    if form.open.is_some() {
        return Ok(redirect(next));
    }
    let section = next.split('/').nth(1).unwrap_or("");
    Ok(redirect(&format!("/{section}")))
}
