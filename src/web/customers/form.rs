//! `GET /customers/new`, `POST /customers`, `GET|POST /customers/{key}/edit`.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use askama::Template;

use super::{detail_path, load, KeyPath};
use crate::db;
use crate::domain::customers::{self, Customer, CustomerInput};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::forms::{rerender, FormErrors};
use crate::web::{redirect, render};
use crate::AppState;

/// Custom field rows a form may carry (the form size limit bounds it too).
const MAX_FORM_ROWS: usize = 200;

/// The form as typed, kept to re-render it with a message next to each invalid field.
/// Field names are the API's (`metadata.date_of_birth`, `referring_customer`, …), so a
/// domain message lands next to the right input.
#[derive(Clone, Debug, Default)]
pub struct CustomerForm {
    pub email: String,
    pub name: String,
    pub surname: String,
    pub key: String,
    pub id: String,
    pub date_of_birth: String,
    pub referring_customer: String,
    pub custom_fields: Vec<(String, String)>,
}

/// `custom_fields[3][key]` → (3, "key").
fn custom_field_slot(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("custom_fields[")?;
    let (index, rest) = rest.split_once("][")?;
    let part = rest.strip_suffix(']')?;
    let index = index.parse().ok()?;
    matches!(part, "key" | "value").then_some((index, part))
}

impl CustomerForm {
    fn from_pairs(pairs: &[(String, String)]) -> CustomerForm {
        let mut form = CustomerForm::default();
        let mut rows: BTreeMap<usize, (String, String)> = BTreeMap::new();
        for (name, value) in pairs {
            let value = value.clone();
            match name.as_str() {
                "email" => form.email = value,
                "name" => form.name = value,
                "surname" => form.surname = value,
                "key" => form.key = value,
                "id" => form.id = value,
                "metadata.date_of_birth" => form.date_of_birth = value,
                "referring_customer" => form.referring_customer = value,
                other => {
                    if let Some((index, part)) = custom_field_slot(other) {
                        if rows.len() < MAX_FORM_ROWS || rows.contains_key(&index) {
                            let row = rows.entry(index).or_default();
                            if part == "key" {
                                row.0 = value;
                            } else {
                                row.1 = value;
                            }
                        }
                    }
                }
            }
        }
        form.custom_fields = rows.into_values().collect();
        form
    }

    fn from_customer(customer: &Customer) -> CustomerForm {
        CustomerForm {
            email: customer.email.clone().unwrap_or_default(),
            name: customer.name.clone().unwrap_or_default(),
            surname: customer.surname.clone().unwrap_or_default(),
            key: customer.key.clone(),
            id: customer.external_id.clone(),
            date_of_birth: customer
                .date_of_birth()
                .map(|date| date.to_string())
                .unwrap_or_default(),
            referring_customer: String::new(),
            custom_fields: customer.custom_field_rows(),
        }
    }

    fn input(&self) -> CustomerInput {
        CustomerInput {
            id: Some(self.id.clone()),
            key: Some(self.key.clone()),
            email: Some(self.email.clone()),
            name: Some(self.name.clone()),
            surname: Some(self.surname.clone()),
            date_of_birth: Some(self.date_of_birth.clone()),
            custom_fields: Some(self.custom_fields.clone()),
            referrer: Some(self.referring_customer.clone()),
            ..Default::default()
        }
    }

    /// The typed rows plus one empty row to add a field without JavaScript.
    pub fn rows(&self) -> Vec<(usize, String, String)> {
        self.custom_fields
            .iter()
            .filter(|(key, value)| !key.trim().is_empty() || !value.trim().is_empty())
            .cloned()
            .chain(std::iter::once((String::new(), String::new())))
            .enumerate()
            .map(|(index, (key, value))| (index, key, value))
            .collect()
    }
}

#[derive(Template)]
#[template(path = "customers/form.html")]
struct FormPage {
    page: Page,
    /// `None` for a new customer; the customer being edited otherwise.
    customer: Option<Customer>,
    form: CustomerForm,
    errors: FormErrors,
}

impl FormPage {
    /// The referrer box answers for the referrer given by key or by id.
    fn referrer_error(&self) -> Option<&String> {
        self.errors.first_of(&[
            "referring_customer",
            "referring_customer.key",
            "referring_customer.id",
        ])
    }

    fn action(&self) -> String {
        match &self.customer {
            Some(customer) => format!("/customers/{}/edit", customer.key),
            None => "/customers".to_string(),
        }
    }
}

/// A form error re-renders the form (422) with what was typed; anything else is an
/// error page.
fn again(
    page: Page,
    customer: Option<Customer>,
    form: CustomerForm,
    error: Error,
) -> Result<HttpResponse, Error> {
    rerender(error, |errors| FormPage {
        page,
        customer,
        form,
        errors,
    })
}

pub async fn new_form(page: Page) -> Result<HttpResponse, Error> {
    render(&FormPage {
        page,
        customer: None,
        form: CustomerForm::default(),
        errors: FormErrors::default(),
    })
}

pub async fn create(
    state: web::Data<AppState>,
    page: Page,
    body: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let form = CustomerForm::from_pairs(&body);
    // Parsed and checked against the other customers in one go: every message at once.
    let (program, actor, input) = (page.program.clone(), page.actor(), form.input());
    match db::run(&state.pool, move |conn| {
        customers::create_from_input(conn, &program, &actor, input)
    })
    .await
    {
        Ok(customer) => {
            page.flash(
                "success",
                format!("Customer {} created.", customer.display_name()),
            );
            Ok(redirect(&detail_path(&customer.key)))
        }
        Err(error) => again(page, None, form, error),
    }
}

pub async fn edit_form(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, Error> {
    let customer = load(&state, page.program.id, &path.key).await?;
    render(&FormPage {
        form: CustomerForm::from_customer(&customer),
        customer: Some(customer),
        page,
        errors: FormErrors::default(),
    })
}

pub async fn update(
    state: web::Data<AppState>,
    page: Page,
    path: web::Path<KeyPath>,
    body: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let customer = load(&state, page.program.id, &path.key).await?;
    let form = CustomerForm::from_pairs(&body);
    // The id is not editable here; only the fields the form shows change.
    let input = CustomerInput {
        id: None,
        referrer: None,
        ..form.input()
    };
    let (program, actor, customer_id) = (page.program.clone(), page.actor(), customer.id);
    match db::run(&state.pool, move |conn| {
        customers::update_from_input(conn, &program, &actor, customer_id, input)
    })
    .await
    {
        Ok(updated) => {
            let message = if updated.key != customer.key {
                format!(
                    "Customer saved. The key is now {}; links with the old key {} still lead to this customer.",
                    updated.key, customer.key
                )
            } else {
                "Customer saved.".to_string()
            };
            page.flash("success", message);
            Ok(redirect(&detail_path(&updated.key)))
        }
        Err(error) => again(page, Some(customer), form, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_field_rows_come_in_index_order() {
        let pairs: Vec<(String, String)> = vec![
            ("custom_fields[1][key]".into(), "b".into()),
            ("custom_fields[0][value]".into(), "1".into()),
            ("custom_fields[0][key]".into(), "a".into()),
            ("custom_fields[1][value]".into(), "2".into()),
            ("custom_fields[x][key]".into(), "ignored".into()),
            ("email".into(), "ada@example.com".into()),
        ];
        let form = CustomerForm::from_pairs(&pairs);
        assert_eq!(
            form.custom_fields,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
        assert_eq!(form.email, "ada@example.com");
        assert_eq!(form.rows().len(), 3, "one empty row to add a field");
    }
}
