//! `GET /customers`: the searchable, filterable, sortable, paginated list.

use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::NaiveDate;

use crate::db;
use crate::domain::customers::listing::{Cursor, ListRequest, PastEnd};
use crate::domain::customers::{
    CustomerFilter, CustomerRow, ReferStatus, SortColumn, SortDirection, StatusFilter, Total,
};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::paging::{ListUrl, Pager, Sorting};
use crate::web::render;
use crate::AppState;

/// Page sizes offered; any other value is clamped to the nearest one below (at least 15).
pub const PER_PAGE_CHOICES: [i64; 4] = [15, 50, 100, 250];

/// The list's query, parsed leniently: an unknown or malformed value means the default,
/// never an error page (people edit addresses by hand and follow old links).
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    pub q: String,
    pub filter: CustomerFilter,
    pub page: i64,
    pub per_page: i64,
    /// From a far page link: `after=5000_123` (the link was on page 5000, whose last row
    /// is customer 123, an internal id) or `before=5000_123` (whose first row is); see
    /// `Pager::href`.
    pub cursor: Option<Cursor>,
}

fn parse_cursor(value: &str) -> Option<(i64, i64)> {
    let (page, id) = value.trim().split_once('_')?;
    let (page, id) = (page.parse::<i64>().ok()?, id.parse::<i64>().ok()?);
    (page >= 1 && id >= 1).then_some((page, id))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "yes" | "true" | "1" => Some(true),
        "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// A page number; a number too big for i64 is "the last page".
fn parse_page(value: &str) -> i64 {
    let value = value.trim();
    match value.parse::<i64>() {
        Ok(page) => page.max(1),
        Err(_) if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) => i64::MAX,
        Err(_) => 1,
    }
}

fn parse_per_page(value: &str) -> i64 {
    let wanted = parse_page(value);
    PER_PAGE_CHOICES
        .into_iter()
        .rev()
        .find(|choice| *choice <= wanted)
        .unwrap_or(PER_PAGE_CHOICES[0])
}

fn parse_date(value: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").ok()
}

impl ListParams {
    /// From the query's pairs; the last value of a repeated parameter wins.
    pub fn from_pairs(pairs: &[(String, String)]) -> ListParams {
        let mut params = ListParams {
            page: 1,
            per_page: PER_PAGE_CHOICES[0],
            ..Default::default()
        };
        let mut sort = None;
        let mut direction = None;
        for (name, value) in pairs {
            let value = value.as_str();
            match name.as_str() {
                "q" => params.q = value.trim().chars().take(200).collect(),
                "refer_status" => params.filter.refer_status = ReferStatus::parse(value),
                "status" => params.filter.status = StatusFilter::parse(value).unwrap_or_default(),
                "approved" => params.filter.approved = parse_bool(value),
                "from" => params.filter.created_from = parse_date(value),
                "to" => params.filter.created_to = parse_date(value),
                "sort" => sort = SortColumn::parse(value),
                "dir" => direction = SortDirection::parse(value),
                "page" => params.page = parse_page(value),
                "per_page" => params.per_page = parse_per_page(value),
                "after" => params.cursor = parse_cursor(value).map(|(page, id)| Cursor::After { page, id }),
                "before" => params.cursor = parse_cursor(value).map(|(page, id)| Cursor::Before { page, id }),
                _ => {}
            }
        }
        params.filter.search = (!params.q.is_empty()).then(|| params.q.clone());
        params.filter.sort = sort.unwrap_or_default();
        params.filter.direction = direction.unwrap_or_else(|| params.filter.sort.natural_direction());
        params
    }

    /// The page this query asks the customer list for.
    pub fn request(&self) -> ListRequest {
        ListRequest {
            filter: self.filter.clone(),
            page: self.page,
            per_page: self.per_page,
            cursor: self.cursor,
            past_end: PastEnd::LastPage,
        }
    }

    /// True when anything narrows the list beyond the default (active customers).
    pub fn is_filtered(&self) -> bool {
        let filter = &self.filter;
        filter.search.is_some()
            || filter.refer_status.is_some()
            || filter.status != StatusFilter::Active
            || filter.approved.is_some()
            || filter.created_from.is_some()
            || filter.created_to.is_some()
    }

    /// The list's address with every filter, the sort and the page size (not the page).
    pub fn url(&self, path: &str) -> ListUrl {
        let filter = &self.filter;
        let date =
            |date: Option<NaiveDate>| date.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default();
        let mut url = ListUrl::new(path)
            .param("q", self.q.clone())
            .param(
                "refer_status",
                filter.refer_status.map(ReferStatus::as_str).unwrap_or_default(),
            )
            .param(
                "approved",
                filter
                    .approved
                    .map(|a| if a { "yes" } else { "no" })
                    .unwrap_or_default(),
            )
            .param("from", date(filter.created_from))
            .param("to", date(filter.created_to));
        if filter.status != StatusFilter::Active {
            url = url.param("status", filter.status.as_str());
        }
        if filter.sort != SortColumn::Created || filter.direction != SortDirection::Desc {
            url = url
                .param("sort", filter.sort.as_str())
                .param("dir", filter.direction.as_str());
        }
        if self.per_page != PER_PAGE_CHOICES[0] {
            url = url.param("per_page", self.per_page.to_string());
        }
        url
    }

    // Template helpers for the filter form.
    pub fn refer_status_is(&self, value: &str) -> bool {
        self.filter.refer_status.map(ReferStatus::as_str).unwrap_or("") == value
    }

    pub fn status_is(&self, value: &str) -> bool {
        self.filter.status.as_str() == value
    }

    pub fn approved_is(&self, value: &str) -> bool {
        match self.filter.approved {
            Some(true) => value == "yes",
            Some(false) => value == "no",
            None => value.is_empty(),
        }
    }

    pub fn created_from_value(&self) -> String {
        self.filter
            .created_from
            .map(|d| d.to_string())
            .unwrap_or_default()
    }

    pub fn created_to_value(&self) -> String {
        self.filter.created_to.map(|d| d.to_string()).unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "customers/index.html")]
struct ListPage {
    page: Page,
    params: ListParams,
    rows: Vec<CustomerRow>,
    pager: Pager,
    sorting: Sorting,
    reset_url: String,
    export_url: String,
    per_page_choices: [i64; 4],
}

impl ListPage {
    /// The list's parameters, carried by the bulk form as hidden fields.
    fn list_fields(&self) -> Vec<(String, String)> {
        self.params.url("/customers").params().to_vec()
    }
}

pub async fn index(
    state: web::Data<AppState>,
    page: Page,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let params = ListParams::from_pairs(&query);
    let program_id = page.program.id;
    let found = {
        let (list, request) = (state.customer_list.clone(), params.request());
        db::run(&state.pool, move |conn| {
            list.page::<CustomerRow>(conn, program_id, &request)
        })
        .await?
    };
    let per_page = params.per_page;

    let url = params.url("/customers");
    let columns = SortColumn::ALL
        .into_iter()
        .map(|column| (column.as_str(), column.natural_direction().as_str()))
        .collect();
    let sorting = Sorting::new(
        url.clone(),
        params.filter.sort.as_str(),
        params.filter.direction.as_str(),
        columns,
    );
    let mut pager = match found.total {
        Total::Exact(total) => Pager::new(url.clone(), "page", found.number, per_page, total),
        Total::About(total) => Pager::estimated(
            url.clone(),
            "page",
            found.number,
            per_page,
            total,
            found.rows.len() as i64,
        ),
    };
    if let Some((first, last)) = found.cursor_ids() {
        pager = pager.with_cursors(first, last);
    }
    render(&ListPage {
        export_url: url.on_path("/customers/export.csv"),
        reset_url: "/customers".into(),
        pager,
        sorting,
        rows: found.rows,
        params,
        page,
        per_page_choices: PER_PAGE_CHOICES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(query).unwrap()
    }

    #[test]
    fn odd_values_fall_back_to_defaults() {
        let params = ListParams::from_pairs(&pairs(
            "page=-3&per_page=9999&status=bogus&sort=nope&dir=up&approved=maybe&from=2024-13-01",
        ));
        assert_eq!(params.page, 1);
        assert_eq!(params.per_page, 250);
        assert_eq!(params.filter, CustomerFilter::default());
        assert_eq!(ListParams::from_pairs(&pairs("per_page=20")).per_page, 15);
        assert_eq!(ListParams::from_pairs(&pairs("per_page=0")).per_page, 15);
        assert_eq!(
            ListParams::from_pairs(&pairs("page=99999999999999999999999")).page,
            i64::MAX
        );
    }

    #[test]
    fn cursors_are_parsed_from_the_link() {
        // (Where a cursor continues is `listing::Cursor`'s own test.)
        let params = ListParams::from_pairs(&pairs("page=5001&after=5000_77"));
        assert_eq!(params.cursor, Some(Cursor::After { page: 5000, id: 77 }));
        let before = ListParams::from_pairs(&pairs("page=4998&before=5000_9")).cursor;
        assert_eq!(before, Some(Cursor::Before { page: 5000, id: 9 }));
        for odd in ["after=x", "after=5_", "after=0_3", "before=-1_2", "after=1_2_3"] {
            assert_eq!(ListParams::from_pairs(&pairs(odd)).cursor, None, "{odd}");
        }
    }

    #[test]
    fn the_url_keeps_every_filter() {
        let params = ListParams::from_pairs(&pairs(
            "q=%40acme&refer_status=referred&status=all&approved=no&from=2024-01-01&to=2024-02-01&sort=email&dir=desc&per_page=50&page=2",
        ));
        assert_eq!(
            params.url("/customers").href(),
            "/customers?q=%40acme&refer_status=referred&approved=no&from=2024-01-01&to=2024-02-01&status=all&sort=email&dir=desc&per_page=50"
        );
        assert!(params.is_filtered());
    }
}
