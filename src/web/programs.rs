//! Programs (admins only): the list, and the create and edit forms. The program switcher
//! in the top bar lists every program; the current one scopes every other page.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db;
use crate::domain::programs::{self, Program, ProgramInput, DEFAULT_LINK_PARAM};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render};
use crate::AppState;

#[derive(Template)]
#[template(path = "programs/index.html")]
struct ProgramsPage {
    page: Page,
    programs: Vec<Program>,
}

pub async fn index(state: web::Data<AppState>, page: Page) -> Result<HttpResponse, Error> {
    let programs = db::run(&state.pool, programs::list).await?;
    render(&ProgramsPage { page, programs })
}

/// The program form as typed, kept to re-render it with the user's input.
#[derive(Clone, Deserialize, Default)]
pub struct ProgramForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    referral_base_url: String,
    #[serde(default)]
    link_param: String,
    /// A checkbox: present when ticked.
    require_approval: Option<String>,
}

impl ProgramForm {
    fn from_program(program: &Program) -> ProgramForm {
        ProgramForm {
            name: program.name.clone(),
            slug: program.slug.clone(),
            referral_base_url: program.referral_base_url.clone(),
            link_param: program.link_param.clone(),
            require_approval: program.require_approval.then(|| "on".to_string()),
        }
    }

    fn require_approval(&self) -> bool {
        self.require_approval.is_some()
    }

    /// Every problem of the form at once, the slug checked against the programs but
    /// `except`.
    fn parse(&self, conn: &mut diesel::PgConnection, except: Option<i64>) -> Result<ProgramInput, Error> {
        programs::parse_checked(
            conn,
            except,
            &self.name,
            &self.slug,
            &self.referral_base_url,
            &self.link_param,
            self.require_approval(),
        )
    }
}

#[derive(Template)]
#[template(path = "programs/form.html")]
struct ProgramFormPage {
    page: Page,
    /// `None` when creating.
    program: Option<Program>,
    form: ProgramForm,
    errors: FormErrors,
}

impl ProgramFormPage {
    fn action(&self) -> String {
        match &self.program {
            Some(program) => format!("/programs/{}/edit", program.id),
            None => "/programs".to_string(),
        }
    }
}

pub async fn new_form(page: Page) -> Result<HttpResponse, Error> {
    render(&ProgramFormPage {
        page,
        program: None,
        form: ProgramForm {
            link_param: DEFAULT_LINK_PARAM.into(),
            ..ProgramForm::default()
        },
        errors: FormErrors::default(),
    })
}

pub async fn create(
    state: web::Data<AppState>,
    page: Page,
    form: web::Form<ProgramForm>,
) -> Result<HttpResponse, Error> {
    let form = form.into_inner();
    let actor = page.actor();
    let typed = form.clone();
    let result = db::run(&state.pool, move |conn| {
        let input = typed.parse(conn, None)?;
        programs::create(conn, &actor, input)
    })
    .await;
    match result {
        Ok(program) => {
            page.flash(
                "success",
                format!(
                    "Program {} was created. Switch to it with the program menu at the top.",
                    program.name
                ),
            );
            Ok(redirect("/programs"))
        }
        Err(error) => rerender(error, |errors| ProgramFormPage {
            page,
            program: None,
            form,
            errors,
        }),
    }
}

pub async fn edit_form(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    let id = id.into_inner();
    let program = db::run(&state.pool, move |conn| programs::find(conn, id)).await?;
    render(&ProgramFormPage {
        page,
        form: ProgramForm::from_program(&program),
        program: Some(program),
        errors: FormErrors::default(),
    })
}

pub async fn update(
    state: web::Data<AppState>,
    page: Page,
    id: web::Path<i64>,
    form: web::Form<ProgramForm>,
) -> Result<HttpResponse, Error> {
    let id = id.into_inner();
    let form = form.into_inner();
    let program = db::run(&state.pool, move |conn| programs::find(conn, id)).await?;
    let actor = page.actor();
    let typed = form.clone();
    let result = db::run(&state.pool, move |conn| {
        let input = typed.parse(conn, Some(id))?;
        programs::update(conn, &actor, id, input)
    })
    .await;
    match result {
        Ok(program) => {
            page.flash("success", format!("Program {} was saved.", program.name));
            Ok(redirect("/programs"))
        }
        Err(error) => rerender(error, |errors| ProgramFormPage {
            page,
            program: Some(program),
            form,
            errors,
        }),
    }
}
