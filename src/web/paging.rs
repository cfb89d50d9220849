//! Links for list pages: page numbers and sortable column headers that keep every other
//! filter of the current address. Rendered by the `pagination` and `sort_header` macros
//! of `templates/_macros.html`; any list page can use them.

use crate::web::access::urlencode;

/// A list page's path and its query parameters (in a stable order).
#[derive(Clone, Debug, Default)]
pub struct ListUrl {
    path: String,
    params: Vec<(String, String)>,
    /// `#id` of the part of the page the list is in, when it is not the whole page.
    anchor: Option<&'static str>,
}

impl ListUrl {
    pub fn new(path: &str) -> ListUrl {
        ListUrl {
            path: path.to_string(),
            params: Vec::new(),
            anchor: None,
        }
    }

    /// Links land on the element with this id (a panel of a longer page).
    pub fn anchor(mut self, id: &'static str) -> ListUrl {
        self.anchor = Some(id);
        self
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
        let anchor = self.anchor.map(|id| format!("#{id}")).unwrap_or_default();
        if query.is_empty() {
            format!("{}{anchor}", self.path)
        } else {
            format!("{}?{}{anchor}", self.path, query)
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
            anchor: None,
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

/// `1234567` as `1,234,567` (see `web::format`).
pub fn thousands(n: i64) -> String {
    crate::web::format::number(n)
}

/// Page links to pages starting this many rows or more into a list continue from the
/// current page's first or last row (keyset pagination) instead of counting rows from the
/// start, when the list supports it. Nearer pages keep plain `page=N` addresses.
pub const KEYSET_FROM_ROW: i64 = 1000;

/// A `page` parameter as typed: a number from 1 to a million; anything else is page 1.
pub fn requested_page(raw: &str) -> i64 {
    raw.trim().parse::<i64>().unwrap_or(1).clamp(1, 1_000_000)
}

/// How many pages a list of `total` rows fills, at least one.
pub fn page_count(total: i64, per_page: i64) -> i64 {
    ((total.max(0) + per_page - 1) / per_page.max(1)).max(1)
}

/// How much a pager knows about the size of its list.
enum Count {
    /// The total is exact: the last page is known.
    Exact,
    /// The total is an estimate (see `domain::customers::Total`); the page shows `rows` rows.
    Estimated { rows: i64 },
    /// The total is a lower bound (counting stopped there); the page shows `rows` rows and
    /// whether another follows is known.
    AtLeast { rows: i64, has_next: bool },
}

/// Which page of how many, and the links to the others.
pub struct Pager {
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
    count: Count,
    /// Internal ids of the first and last row shown, for links that continue from them.
    cursors: Option<(i64, i64)>,
    url: ListUrl,
    param: &'static str,
}

impl Pager {
    /// `param` is the query parameter carrying the page number (`page` on most lists).
    /// The page is clamped to the existing ones.
    pub fn new(url: ListUrl, param: &'static str, page: i64, per_page: i64, total: i64) -> Pager {
        let per_page = per_page.max(1);
        let total = total.max(0);
        Pager {
            page: page.clamp(1, page_count(total, per_page)),
            per_page,
            total,
            count: Count::Exact,
            cursors: None,
            url,
            param,
        }
    }

    /// A list whose total is an estimate, showing `rows` rows on `page`: the page is not
    /// clamped to the estimate, and the last page is the one with fewer rows than a page.
    pub fn estimated(
        url: ListUrl,
        param: &'static str,
        page: i64,
        per_page: i64,
        total: i64,
        rows: i64,
    ) -> Pager {
        Pager::uncounted(url, param, page, per_page, total, Count::Estimated { rows })
    }

    /// A list counted only up to `total` ("more than"), showing `rows` rows on `page`: the
    /// links reach the page after this one when `has_next`.
    pub fn at_least(
        url: ListUrl,
        param: &'static str,
        page: i64,
        per_page: i64,
        total: i64,
        rows: i64,
        has_next: bool,
    ) -> Pager {
        Pager::uncounted(
            url,
            param,
            page,
            per_page,
            total,
            Count::AtLeast { rows, has_next },
        )
    }

    /// A list whose last page is not known from `total`: the page is not clamped to it.
    fn uncounted(
        url: ListUrl,
        param: &'static str,
        page: i64,
        per_page: i64,
        total: i64,
        count: Count,
    ) -> Pager {
        let mut pager = Pager::new(url, param, 1, per_page, total);
        pager.page = page.max(1);
        pager.count = count;
        pager
    }

    /// Links to far pages continue from this page's first and last rows (internal ids).
    pub fn with_cursors(mut self, first_id: i64, last_id: i64) -> Pager {
        self.cursors = Some((first_id, last_id));
        self
    }

    pub fn is_approximate(&self) -> bool {
        matches!(self.count, Count::Estimated { .. })
    }

    /// "1,000,000", "about 1,000,000" for an estimate, "more than 1,000" for a lower bound.
    pub fn total_text(&self) -> String {
        match self.count {
            Count::Exact => thousands(self.total),
            Count::Estimated { .. } => format!("about {}", thousands(self.total)),
            Count::AtLeast { .. } => format!("more than {}", thousands(self.total)),
        }
    }

    pub fn last_page(&self) -> i64 {
        page_count(self.total, self.per_page)
    }

    /// Whether the list has pages to link to.
    pub fn has_other_pages(&self) -> bool {
        match self.count {
            Count::AtLeast { has_next, .. } => self.page > 1 || has_next,
            _ => self.last_page() > 1,
        }
    }

    /// Rows on this page, when the list said.
    fn rows(&self) -> Option<i64> {
        match self.count {
            Count::Exact => None,
            Count::Estimated { rows } | Count::AtLeast { rows, .. } => Some(rows),
        }
    }

    /// Whether a page follows this one.
    fn has_next(&self) -> bool {
        match self.count {
            Count::Exact => self.page < self.last_page(),
            Count::Estimated { rows } => rows >= self.per_page,
            Count::AtLeast { has_next, .. } => has_next,
        }
    }

    /// Number of the first row shown (0 when there is none).
    pub fn from(&self) -> i64 {
        if self.total == 0 || self.rows() == Some(0) {
            0
        } else {
            (self.page - 1) * self.per_page + 1
        }
    }

    /// Number of the last row shown.
    pub fn to(&self) -> i64 {
        match self.rows() {
            Some(rows) => (self.page - 1) * self.per_page + rows,
            None => (self.page * self.per_page).min(self.total),
        }
    }

    /// "1–15", "74,986–75,000".
    pub fn range_text(&self) -> String {
        format!("{}–{}", thousands(self.from()), thousands(self.to()))
    }

    pub fn href(&self, page: i64) -> String {
        if page <= 1 {
            return self.url.with(&[(self.param, None)]);
        }
        let number = page.to_string();
        let far = (page - 1).saturating_mul(self.per_page) >= KEYSET_FROM_ROW;
        // The last page of an exact list is read from the end: no cursor needed.
        let last = matches!(self.count, Count::Exact) && page == self.last_page();
        match self.cursors {
            Some((first, last_row)) if far && !last && page != self.page => {
                let (name, id) = if page > self.page {
                    ("after", last_row)
                } else {
                    ("before", first)
                };
                let cursor = format!("{}_{}", self.page, id);
                self.url
                    .with(&[(self.param, Some(&number)), (name, Some(&cursor))])
            }
            _ => self.url.with(&[(self.param, Some(&number))]),
        }
    }

    pub fn prev_href(&self) -> Option<String> {
        (self.page > 1).then(|| self.href(self.page - 1))
    }

    pub fn next_href(&self) -> Option<String> {
        self.has_next().then(|| self.href(self.page + 1))
    }

    /// First, last, and two pages either side of the current one, with gaps between. An
    /// estimated list has no known last page: it ends with a gap while more follow. A list
    /// counted to a limit runs to the page after this one.
    pub fn items(&self) -> Vec<PageItem> {
        let last = match self.count {
            Count::Exact => self.last_page(),
            Count::Estimated { .. } if self.has_next() => self.page + 2,
            Count::Estimated { .. } => self.page,
            Count::AtLeast { has_next, .. } => self.page + i64::from(has_next),
        };
        let mut numbers: Vec<i64> = vec![1, last];
        numbers.extend((self.page - 2).max(1)..=(self.page + 2).min(last));
        numbers.sort_unstable();
        numbers.dedup();
        let mut items = Vec::new();
        let mut previous = 0;
        for number in numbers {
            if number > previous + 1 {
                items.push(PageItem::gap());
            }
            items.push(PageItem {
                number,
                href: self.href(number),
                current: number == self.page,
                gap: false,
            });
            previous = number;
        }
        if self.is_approximate() && self.has_next() {
            items.push(PageItem::gap());
        }
        items
    }
}

impl PageItem {
    fn gap() -> PageItem {
        PageItem {
            number: 0,
            href: String::new(),
            current: false,
            gap: true,
        }
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
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(-12_345), "-12,345");
    }

    #[test]
    fn far_page_links_continue_from_the_rows_shown() {
        let pager = Pager::new(ListUrl::new("/customers"), "page", 5000, 15, 1_000_000).with_cursors(11, 22);
        assert_eq!(pager.next_href().unwrap(), "/customers?page=5001&after=5000_22");
        assert_eq!(pager.prev_href().unwrap(), "/customers?page=4999&before=5000_11");
        // Near the start: plain numbers; the last page is read from the end.
        assert_eq!(pager.href(2), "/customers?page=2");
        assert_eq!(pager.href(66), "/customers?page=66");
        assert_eq!(pager.href(68), "/customers?page=68&before=5000_11");
        assert_eq!(pager.href(66_667), "/customers?page=66667");
        assert_eq!(pager.range_text(), "74,986–75,000");
        assert_eq!(pager.total_text(), "1,000,000");
        // Without cursors (e.g. sorted by email), every link is a plain number.
        let plain = Pager::new(ListUrl::new("/customers"), "page", 5000, 15, 1_000_000);
        assert_eq!(plain.next_href().unwrap(), "/customers?page=5001");
    }

    #[test]
    fn estimated_lists_say_about_and_end_where_the_rows_end() {
        let full = Pager::estimated(ListUrl::new("/c"), "page", 3, 15, 120_000, 15);
        assert!(full.is_approximate());
        assert_eq!(full.total_text(), "about 120,000");
        assert_eq!(full.range_text(), "31–45");
        assert!(full.next_href().is_some());
        let numbers: Vec<(i64, bool)> = full.items().iter().map(|item| (item.number, item.gap)).collect();
        assert_eq!(
            numbers,
            vec![
                (1, false),
                (2, false),
                (3, false),
                (4, false),
                (5, false),
                (0, true)
            ]
        );
        let end = Pager::estimated(ListUrl::new("/c"), "page", 90_000, 15, 120_000, 4);
        assert!(end.next_href().is_none());
        assert_eq!(end.range_text(), "1,349,986–1,349,989");
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
