//! Links for list pages: page numbers and sortable column headers that keep every other
//! filter of the current address. Rendered by the `pagination` and `sort_header` macros
//! of `templates/_macros.html`; any list page can use them.

use crate::web::access::urlencode;

/// A list page's path and its query parameters (in a stable order).
#[derive(Clone, Debug, Default)]
pub struct ListUrl {
    path: String,
    params: Vec<(String, String)>,
}

impl ListUrl {
    pub fn new(path: &str) -> ListUrl {
        ListUrl {
            path: path.to_string(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter; empty values are left out of the address.
    pub fn param(mut self, name: &str, value: impl Into<String>) -> ListUrl {
        let value = value.into();
        if !value.is_empty() {
            self.params.retain(|(existing, _)| existing != name);
            self.params.push((name.to_string(), value));
        }
        self
    }

    /// The address with `changes` applied: `Some(value)` sets, `None` removes.
    pub fn with(&self, changes: &[(&str, Option<&str>)]) -> String {
        let mut params = self.params.clone();
        for (name, value) in changes {
            match params.iter_mut().find(|(existing, _)| existing == name) {
                Some(existing) => match value {
                    Some(value) => existing.1 = value.to_string(),
                    None => existing.1.clear(),
                },
                None => {
                    if let Some(value) = value {
                        params.push((name.to_string(), value.to_string()));
                    }
                }
            }
        }
        let query = params
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| format!("{}={}", urlencode(name), urlencode(value)))
            .collect::<Vec<_>>()
            .join("&");
        if query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, query)
        }
    }

    /// The address itself.
    pub fn href(&self) -> String {
        self.with(&[])
    }

    /// The same query on another path (e.g. the CSV export of a filtered list).
    pub fn on_path(&self, path: &str) -> String {
        ListUrl {
            path: path.to_string(),
            params: self.params.clone(),
        }
        .href()
    }

    /// The query parameters, e.g. for hidden inputs of a form that must keep them.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }
}

/// One entry of the page-number list: a link, the current page, or a gap ("…").
pub struct PageItem {
    pub number: i64,
    pub href: String,
    pub current: bool,
    pub gap: bool,
}

/// Which page of how many, and the links to the others.
pub struct Pager {
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
    url: ListUrl,
    param: &'static str,
}

impl Pager {
    /// `param` is the query parameter carrying the page number (`page` on most lists).
    /// The page is clamped to the existing ones.
    pub fn new(url: ListUrl, param: &'static str, page: i64, per_page: i64, total: i64) -> Pager {
        let per_page = per_page.max(1);
        let mut pager = Pager {
            page: 1,
            per_page,
            total: total.max(0),
            url,
            param,
        };
        pager.page = page.clamp(1, pager.last_page());
        pager
    }

    pub fn last_page(&self) -> i64 {
        ((self.total + self.per_page - 1) / self.per_page).max(1)
    }

    /// Number of the first row shown (0 when there is none).
    pub fn from(&self) -> i64 {
        if self.total == 0 {
            0
        } else {
            (self.page - 1) * self.per_page + 1
        }
    }

    /// Number of the last row shown.
    pub fn to(&self) -> i64 {
        (self.page * self.per_page).min(self.total)
    }

    pub fn href(&self, page: i64) -> String {
        if page <= 1 {
            self.url.with(&[(self.param, None)])
        } else {
            self.url.with(&[(self.param, Some(&page.to_string()))])
        }
    }

    pub fn prev_href(&self) -> Option<String> {
        (self.page > 1).then(|| self.href(self.page - 1))
    }

    pub fn next_href(&self) -> Option<String> {
        (self.page < self.last_page()).then(|| self.href(self.page + 1))
    }

    /// First, last, and two pages either side of the current one, with gaps between.
    pub fn items(&self) -> Vec<PageItem> {
        let last = self.last_page();
        let mut numbers: Vec<i64> = vec![1, last];
        numbers.extend((self.page - 2).max(1)..=(self.page + 2).min(last));
        numbers.sort_unstable();
        numbers.dedup();
        let mut items = Vec::new();
        let mut previous = 0;
        for number in numbers {
            if number > previous + 1 {
                items.push(PageItem {
                    number: 0,
                    href: String::new(),
                    current: false,
                    gap: true,
                });
            }
            items.push(PageItem {
                number,
                href: self.href(number),
                current: number == self.page,
                gap: false,
            });
            previous = number;
        }
        items
    }
}

/// The current sort of a list and the header links that change it.
pub struct Sorting {
    column: String,
    direction: String,
    url: ListUrl,
    /// Each sortable column with the direction its first click sorts by.
    columns: Vec<(&'static str, &'static str)>,
}

impl Sorting {
    /// `url` should not carry the page: a new sort starts on page 1.
    pub fn new(
        url: ListUrl,
        column: &str,
        direction: &str,
        columns: Vec<(&'static str, &'static str)>,
    ) -> Sorting {
        Sorting {
            column: column.to_string(),
            direction: direction.to_string(),
            url,
            columns,
        }
    }

    /// The current column sorts the other way; another column sorts its natural way.
    pub fn sort_href(&self, column: &str) -> String {
        let direction = if column == self.column {
            if self.direction == "asc" {
                "desc"
            } else {
                "asc"
            }
        } else {
            self.columns
                .iter()
                .find(|(name, _)| *name == column)
                .map(|(_, direction)| *direction)
                .unwrap_or("asc")
        };
        self.url
            .with(&[("sort", Some(column)), ("dir", Some(direction)), ("page", None)])
    }

    /// `asc` / `desc` on the current column (styled with an arrow), empty otherwise.
    pub fn sort_class(&self, column: &str) -> &str {
        if column == self.column {
            &self.direction
        } else {
            ""
        }
    }

    /// The `aria-sort` value of a column header.
    pub fn aria_sort(&self, column: &str) -> &'static str {
        match (column == self.column, self.direction.as_str()) {
            (true, "asc") => "ascending",
            (true, _) => "descending",
            _ => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> ListUrl {
        ListUrl::new("/customers")
            .param("q", "a b&c")
            .param("status", "all")
            .param("empty", "")
    }

    #[test]
    fn links_keep_the_other_parameters() {
        assert_eq!(url().href(), "/customers?q=a+b%26c&status=all");
        assert_eq!(
            url().with(&[("page", Some("3"))]),
            "/customers?q=a+b%26c&status=all&page=3"
        );
        assert_eq!(url().with(&[("status", None)]), "/customers?q=a+b%26c");
        assert_eq!(
            url().on_path("/customers/export.csv"),
            "/customers/export.csv?q=a+b%26c&status=all"
        );
    }

    #[test]
    fn pages_are_clamped_and_windowed() {
        let pager = Pager::new(url(), "page", 999, 15, 100);
        assert_eq!(pager.page, 7);
        assert_eq!((pager.from(), pager.to()), (91, 100));
        assert!(pager.next_href().is_none());
        let numbers: Vec<i64> = pager.items().iter().map(|item| item.number).collect();
        assert_eq!(numbers, vec![1, 0, 5, 6, 7]);
        let empty = Pager::new(url(), "page", 0, 15, 0);
        assert_eq!(
            (empty.page, empty.from(), empty.to(), empty.last_page()),
            (1, 0, 0, 1)
        );
        assert_eq!(empty.href(1), "/customers?q=a+b%26c&status=all");
    }

    #[test]
    fn sorting_toggles_the_current_column_and_starts_others_naturally() {
        let sorting = Sorting::new(
            url().param("page", "4"),
            "created",
            "desc",
            vec![("created", "desc"), ("email", "asc")],
        );
        assert_eq!(
            sorting.sort_href("created"),
            "/customers?q=a+b%26c&status=all&sort=created&dir=asc"
        );
        assert!(sorting.sort_href("email").ends_with("sort=email&dir=asc"));
        assert_eq!(sorting.sort_class("created"), "desc");
        assert_eq!(sorting.sort_class("email"), "");
        assert_eq!(sorting.aria_sort("created"), "descending");
    }
}
