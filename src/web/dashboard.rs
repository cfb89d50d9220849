//! `GET /`: the current program at a glance — totals, rewards per status and unit, the
//! referral funnel over 7, 30, 90 days or a custom range (a plain GET form, no script), a
//! 90-day referrals chart drawn as server-side SVG (no script, no chart library), and the
//! top referrers.

use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::Utc;

use crate::db;
use crate::domain::customers::Customer;
use crate::domain::dashboard::{self, DayCount, Totals};
use crate::domain::rewards::figures::{self, Funnel, StatusTotal};
use crate::error::Error;
use crate::web::context::Page;
use crate::web::format::filters;
use crate::web::forms::FormErrors;
use crate::web::render_status;
use crate::AppState;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    page: Page,
    totals: Totals,
    chart: Chart,
    top: Vec<Customer>,
    rewards: Vec<StatusTotal>,
    funnel: Funnel,
    range: RangeQuery,
    /// The range the funnel covers, in words.
    range_text: String,
    errors: FormErrors,
}

/// The funnel's range as typed: `range` is 7, 30, 90 or `custom` (with `from` and `to`).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct RangeQuery {
    range: String,
    from: String,
    to: String,
}

impl RangeQuery {
    fn is(&self, choice: &str) -> bool {
        let custom = !self.from.trim().is_empty() || !self.to.trim().is_empty();
        match choice {
            "custom" => custom || self.range == "custom",
            "30" => !custom && matches!(self.range.as_str(), "" | "30"),
            other => !custom && self.range == other,
        }
    }
}

impl DashboardPage {
    /// The funnel's steps; a share of a step before that counted nothing is left out
    /// (friends added over the API or by hand never clicked a link: "0%" would mislead).
    fn funnel_steps(&self) -> Vec<(&'static str, i64, String)> {
        let mut before = None;
        self.funnel
            .steps()
            .into_iter()
            .map(|(label, count, share)| {
                let share = if before == Some(0) { String::new() } else { share };
                before = Some(count);
                (label, count, share)
            })
            .collect()
    }
}

pub async fn show(
    state: web::Data<AppState>,
    page: Page,
    range: web::Query<RangeQuery>,
) -> Result<HttpResponse, Error> {
    let program_id = page.program.id;
    let now = Utc::now();
    let range = range.into_inner();
    // A bad range is reported next to its field; the funnel then shows the last 30 days.
    let (errors, (from, until)) = match figures::funnel_range(&range.range, &range.from, &range.to, now) {
        Ok(bounds) => (FormErrors::default(), bounds),
        Err(error) => (
            FormErrors::from_error(error)?,
            figures::funnel_range("30", "", "", now)?,
        ),
    };
    let (totals, days, top, rewards, funnel) = db::run(&state.pool, move |conn| {
        Ok((
            dashboard::totals(conn, program_id, now)?,
            dashboard::referrals_per_day(conn, program_id, now)?,
            dashboard::top_referrers(conn, program_id)?,
            figures::status_totals(conn, program_id)?,
            figures::funnel(conn, program_id, from, until)?,
        ))
    })
    .await?;
    let last_day = until - chrono::Duration::seconds(1);
    let range_text = format!("{} to {}", from.format("%Y-%m-%d"), last_day.format("%Y-%m-%d"));
    render_status(
        errors.status(),
        &DashboardPage {
            page,
            totals,
            chart: Chart::new(&days),
            top,
            rewards,
            funnel,
            range,
            range_text,
            errors,
        },
    )
}

// Chart geometry, in SVG user units (the SVG scales to the card's width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 30.0;
/// A date under every n-th bar.
const LABEL_EVERY: usize = 15;

/// One bar; coordinates are preformatted so the template only places them.
pub struct Bar {
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
    pub day: String,
    pub referrals: i64,
}

pub struct AxisLabel {
    pub x: String,
    pub text: String,
}

/// The referrals-per-day chart, laid out for the template.
pub struct Chart {
    pub width: String,
    pub height: String,
    pub bars: Vec<Bar>,
    pub labels: Vec<AxisLabel>,
    pub max: i64,
    pub total: i64,
    /// Coordinates of the axes and of the max label.
    pub plot_left: String,
    pub plot_right: String,
    pub plot_top: String,
    pub baseline: String,
    pub label_y: String,
    pub max_label_y: String,
    pub zero_label_y: String,
    pub value_x: String,
    /// The same data in words, for screen readers and for anyone who prefers numbers.
    pub summary: String,
    /// Days with at least one referral, newest first.
    pub busy_days: Vec<(String, i64)>,
}

fn n(value: f64) -> String {
    format!("{value:.1}")
}

impl Chart {
    pub fn new(days: &[DayCount]) -> Chart {
        let max = days.iter().map(|day| day.referrals).max().unwrap_or(0);
        let total: i64 = days.iter().map(|day| day.referrals).sum();
        let plot_width = WIDTH - LEFT - RIGHT;
        let plot_height = HEIGHT - TOP - BOTTOM;
        let baseline = HEIGHT - BOTTOM;
        let step = plot_width / days.len().max(1) as f64;
        let bar_width = (step * 0.7).max(1.0);
        let scale = if max > 0 { plot_height / max as f64 } else { 0.0 };
        let bars = days
            .iter()
            .enumerate()
            .map(|(index, day)| {
                let mut height = day.referrals as f64 * scale;
                // A day with referrals stays visible however tall the busiest day is.
                if day.referrals > 0 && height < 1.5 {
                    height = 1.5;
                }
                Bar {
                    x: n(LEFT + index as f64 * step + (step - bar_width) / 2.0),
                    y: n(baseline - height),
                    width: n(bar_width),
                    height: n(height),
                    day: day.day.format("%Y-%m-%d").to_string(),
                    referrals: day.referrals,
                }
            })
            .collect();
        let last = days.len().saturating_sub(1);
        let labels = days
            .iter()
            .enumerate()
            .filter(|(index, _)| (last - index).is_multiple_of(LABEL_EVERY))
            .map(|(index, day)| AxisLabel {
                x: n(LEFT + index as f64 * step + step / 2.0),
                text: day.day.format("%b %-d").to_string(),
            })
            .collect();
        let summary = match (days.first(), days.last()) {
            (Some(first), Some(last)) if total > 0 => {
                let busiest = days
                    .iter()
                    .rfind(|day| day.referrals == max)
                    .map(|day| day.day.format("%Y-%m-%d").to_string())
                    .unwrap_or_default();
                format!(
                    "{total} referrals from {} to {}; the busiest day was {busiest} with {max}.",
                    first.day.format("%Y-%m-%d"),
                    last.day.format("%Y-%m-%d"),
                )
            }
            _ => format!("No referrals in the last {} days.", days.len()),
        };
        let busy_days = days
            .iter()
            .rev()
            .filter(|day| day.referrals > 0)
            .map(|day| (day.day.format("%Y-%m-%d").to_string(), day.referrals))
            .collect();
        Chart {
            width: n(WIDTH),
            height: n(HEIGHT),
            bars,
            labels,
            max,
            total,
            plot_left: n(LEFT),
            plot_right: n(WIDTH - RIGHT),
            plot_top: n(TOP),
            baseline: n(baseline),
            label_y: n(baseline + 18.0),
            max_label_y: n(TOP + 4.0),
            zero_label_y: n(baseline + 4.0),
            value_x: n(LEFT - 6.0),
            summary,
            busy_days,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn the_busiest_day_fills_the_plot() {
        let first = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
        let days: Vec<DayCount> = (0..90)
            .map(|i| DayCount {
                day: first + chrono::Duration::days(i),
                referrals: if i == 89 {
                    4
                } else if i == 10 {
                    1
                } else {
                    0
                },
            })
            .collect();
        let chart = Chart::new(&days);
        assert_eq!(chart.bars.len(), 90);
        assert_eq!(chart.max, 4);
        assert_eq!(chart.total, 5);
        assert_eq!(chart.bars[89].height, n(HEIGHT - TOP - BOTTOM));
        assert_eq!(chart.bars[0].height, "0.0");
        assert_eq!(chart.labels.len(), 6);
        assert_eq!(chart.busy_days[0], ("2026-11-29".to_string(), 4));
        assert!(chart.summary.contains("5 referrals"));
    }
}
