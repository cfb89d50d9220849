//! Programs: one refer-a-friend program each; everything else belongs to exactly one.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::db::schema::programs;
use crate::domain::{audit, Actor};
use crate::error::{add_messages, unique_violation_as_field, Error, FieldErrors};

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = programs)]
pub struct Program {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub referral_base_url: String,
    pub link_param: String,
    pub require_approval: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Program {
    /// `{referral_base_url}?{link_param}={key}`, keeping any query the base URL has.
    pub fn referral_url(&self, key: &str) -> String {
        let separator = if self.referral_base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{}{}={}",
            self.referral_base_url, separator, self.link_param, key
        )
    }
}

pub const DEFAULT_SLUG: &str = "default";

/// A first start creates program `default`.
pub fn ensure_default_program(conn: &mut PgConnection) -> Result<(), Error> {
    diesel::insert_into(programs::table)
        .values((
            programs::slug.eq(DEFAULT_SLUG),
            programs::name.eq("Default program"),
            programs::referral_base_url.eq("https://example.com/"),
        ))
        .on_conflict(programs::slug)
        .do_nothing()
        .execute(conn)?;
    Ok(())
}

pub fn list(conn: &mut PgConnection) -> Result<Vec<Program>, Error> {
    Ok(programs::table
        .order(programs::id)
        .select(Program::as_select())
        .load(conn)?)
}

pub fn find(conn: &mut PgConnection, id: i64) -> Result<Program, Error> {
    Ok(programs::table
        .find(id)
        .select(Program::as_select())
        .first(conn)?)
}

pub fn find_by_slug(conn: &mut PgConnection, slug: &str) -> Result<Program, Error> {
    Ok(programs::table
        .filter(programs::slug.eq(slug))
        .select(Program::as_select())
        .first(conn)?)
}

pub const DEFAULT_LINK_PARAM: &str = "ref";
const MAX_URL_LENGTH: usize = 2000;

/// A program's settings as typed into the form, checked field by field. Built only by
/// [`ProgramInput::parse`], so a value of this type always satisfies the table's CHECKs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramInput {
    pub name: String,
    pub slug: String,
    pub referral_base_url: String,
    pub link_param: String,
    pub require_approval: bool,
}

fn is_slug(value: &str) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit())
        && value.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_link_param(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An absolute http(s) URL with a host and no fragment (the referrer key is appended to
/// the query, which a fragment would swallow). Returned in normalized form.
fn parse_base_url(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("Enter the page referral links land on, e.g. https://shop.example.com/.".into());
    }
    if value.len() > MAX_URL_LENGTH {
        return Err(format!("Use at most {MAX_URL_LENGTH} characters."));
    }
    let url = url::Url::parse(value)
        .map_err(|_| "Enter a full address starting with https:// or http://.".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("Enter a full address starting with https:// or http://.".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("The address needs a host name, e.g. https://shop.example.com/.".into());
    }
    if url.fragment().is_some() {
        return Err("Remove the #fragment: the referrer key is added to the query string.".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Remove the user name and password from the address.".into());
    }
    Ok(url.to_string())
}

impl ProgramInput {
    pub fn parse(
        name: &str,
        slug: &str,
        referral_base_url: &str,
        link_param: &str,
        require_approval: bool,
    ) -> Result<ProgramInput, Error> {
        let mut fields = FieldErrors::new();
        let mut fail = |field: &str, message: String| fields.entry(field.into()).or_default().push(message);
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 200 || super::has_control_chars(&name) {
            fail(
                "name",
                "Enter a name (at most 200 characters, without control characters).".into(),
            );
        }
        let slug = slug.trim().to_string();
        if !is_slug(&slug) {
            fail(
                "slug",
                "Use 1 to 63 lowercase letters, digits and hyphens, starting with a letter or digit.".into(),
            );
        }
        let referral_base_url = match parse_base_url(referral_base_url.trim()) {
            Ok(url) => url,
            Err(message) => {
                fail("referral_base_url", message);
                String::new()
            }
        };
        let link_param = match link_param.trim() {
            "" => DEFAULT_LINK_PARAM.to_string(),
            other => other.to_string(),
        };
        if !is_link_param(&link_param) {
            fail(
                "link_param",
                "Use 1 to 64 letters, digits, dots, hyphens or underscores.".into(),
            );
        }
        if !fields.is_empty() {
            return Err(Error::invalid_fields(fields));
        }
        Ok(ProgramInput {
            name,
            slug,
            referral_base_url,
            link_param,
            require_approval,
        })
    }
}

const SLUG_TAKEN: &str = "Another program already uses this slug.";

/// [`ProgramInput::parse`] and the slug checked against the other programs (all but
/// `except`, the one being edited): every problem of the form in one round.
pub fn parse_checked(
    conn: &mut PgConnection,
    except: Option<i64>,
    name: &str,
    slug: &str,
    referral_base_url: &str,
    link_param: &str,
    require_approval: bool,
) -> Result<ProgramInput, Error> {
    let mut fields = FieldErrors::new();
    let parsed = ProgramInput::parse(name, slug, referral_base_url, link_param, require_approval);
    let input = Error::collect(&mut fields, parsed)?;
    let slug = slug.trim();
    if is_slug(slug) {
        let mut others = programs::table.filter(programs::slug.eq(slug)).into_boxed();
        if let Some(id) = except {
            others = others.filter(programs::id.ne(id));
        }
        let taken: i64 = others.count().get_result(conn)?;
        if taken > 0 {
            add_messages(&mut fields, "slug", [SLUG_TAKEN.to_string()]);
        }
    }
    Error::checked(input, fields)
}

/// The same clash found by the unique index (a race the check could not see).
fn duplicate_slug(error: diesel::result::Error) -> Error {
    unique_violation_as_field(error, "programs_slug_key", "slug", SLUG_TAKEN)
}

fn settings(program: &Program) -> Map<String, Value> {
    let value = json!({
        "name": program.name,
        "slug": program.slug,
        "referral_base_url": program.referral_base_url,
        "link_param": program.link_param,
        "require_approval": program.require_approval,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub fn create(conn: &mut PgConnection, actor: &Actor, input: ProgramInput) -> Result<Program, Error> {
    conn.transaction(|conn| {
        let program = diesel::insert_into(programs::table)
            .values((
                programs::name.eq(&input.name),
                programs::slug.eq(&input.slug),
                programs::referral_base_url.eq(&input.referral_base_url),
                programs::link_param.eq(&input.link_param),
                programs::require_approval.eq(input.require_approval),
            ))
            .returning(Program::as_returning())
            .get_result(conn)
            .map_err(duplicate_slug)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program.id),
                action: "program.create",
                subject_type: "program",
                subject_id: Some(program.id.to_string()),
                customer_id: None,
                before: None,
                after: Some(Value::Object(settings(&program))),
            },
        )?;
        Ok(program)
    })
}

/// Saves new settings. The audit event holds only the fields that changed; saving
/// unchanged settings writes nothing.
pub fn update(
    conn: &mut PgConnection,
    actor: &Actor,
    id: i64,
    input: ProgramInput,
) -> Result<Program, Error> {
    conn.transaction(|conn| {
        let before = programs::table
            .find(id)
            .select(Program::as_select())
            .for_update()
            .first(conn)?;
        let old = settings(&before);
        let proposed = settings(&Program {
            name: input.name.clone(),
            slug: input.slug.clone(),
            referral_base_url: input.referral_base_url.clone(),
            link_param: input.link_param.clone(),
            require_approval: input.require_approval,
            ..before.clone()
        });
        let changed: Vec<&String> = proposed
            .keys()
            .filter(|key| old.get(*key) != proposed.get(*key))
            .collect();
        if changed.is_empty() {
            return Ok(before);
        }
        let after = diesel::update(programs::table.find(id))
            .set((
                programs::name.eq(&input.name),
                programs::slug.eq(&input.slug),
                programs::referral_base_url.eq(&input.referral_base_url),
                programs::link_param.eq(&input.link_param),
                programs::require_approval.eq(input.require_approval),
                programs::updated_at.eq(Utc::now()),
            ))
            .returning(Program::as_returning())
            .get_result(conn)
            .map_err(duplicate_slug)?;
        let pick = |map: &Map<String, Value>| {
            Value::Object(
                changed
                    .iter()
                    .map(|key| ((*key).clone(), map.get(*key).cloned().unwrap_or(Value::Null)))
                    .collect(),
            )
        };
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(id),
                action: "program.update",
                subject_type: "program",
                subject_id: Some(id.to_string()),
                customer_id: None,
                before: Some(pick(&old)),
                after: Some(pick(&proposed)),
            },
        )?;
        Ok(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_error(result: Result<ProgramInput, Error>, field: &str) -> String {
        match result {
            Err(error) => error
                .field_errors()
                .and_then(|f| f.get(field))
                .map(|m| m[0].clone())
                .unwrap_or_default(),
            Ok(_) => String::new(),
        }
    }

    #[test]
    fn valid_settings_are_normalized() {
        let input = ProgramInput::parse(" Shop ", "shop-2", "https://Shop.Example.com", "", true).unwrap();
        assert_eq!(input.name, "Shop");
        assert_eq!(input.referral_base_url, "https://shop.example.com/");
        assert_eq!(input.link_param, "ref");
    }

    #[test]
    fn each_field_gets_its_own_message() {
        let bad = || ProgramInput::parse("", "Bad Slug", "ftp://x", "a b", false);
        assert!(field_error(bad(), "name").contains("Enter a name"));
        assert!(field_error(bad(), "slug").contains("lowercase"));
        assert!(field_error(bad(), "referral_base_url").contains("https://"));
        assert!(field_error(bad(), "link_param").contains("letters"));
        assert!(field_error(
            ProgramInput::parse("a", "a", "https://x.com/#top", "r", false),
            "referral_base_url"
        )
        .contains("fragment"));
        assert!(field_error(
            ProgramInput::parse("a", "-a", "https://x.com/", "r", false),
            "slug"
        )
        .contains("lowercase"));
    }
}
