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
    /// The chart drawn at each size (`WIDE`, `NARROW`); CSS shows the one that fits.
    charts: Vec<Chart>,
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
            charts: vec![Chart::new(&days, &WIDE), Chart::new(&days, &NARROW)],
            top,
            rewards,
            funnel,
            range,
            range_text,
            errors,
        },
    )
}

/// The size a chart is drawn at, in SVG user units (the SVG scales to the card's width).
/// Two are drawn and CSS shows one (`.chart-wide`, `.chart-narrow`): a drawing this wide
/// shrinks too much on a phone for its labels to stay readable, so the phone's has fewer,
/// larger labels. `font` is the label size in user units: with the card's width at the
/// switch between the two (720 px wide at most for the narrow one, from 360 px), each
/// renders its labels at 11 px or more.
pub struct Size {
    pub name: &'static str,
    width: f64,
    height: f64,
    /// The plot's margin on the right (on the left: room for the highest value).
    right: f64,
    top: f64,
    bottom: f64,
    /// A date under every n-th bar.
    label_every: usize,
    font: f64,
}

pub const WIDE: Size = Size {
    name: "wide",
    width: 720.0,
    height: 240.0,
    right: 8.0,
    top: 16.0,
    bottom: 30.0,
    label_every: 15,
    font: 13.0,
};

pub const NARROW: Size = Size {
    name: "narrow",
    width: 360.0,
    height: 220.0,
    right: 4.0,
    top: 16.0,
    bottom: 30.0,
    label_every: 30,
    font: 15.0,
};

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
    /// `middle` under its bar; `end` for the newest day, so it ends at the plot's edge
    /// rather than past the card's.
    pub anchor: &'static str,
}

/// The referrals-per-day chart, laid out for the template.
pub struct Chart {
    /// `wide` or `narrow` (the CSS class `chart-NAME`, and the ids' suffix).
    pub name: &'static str,
    pub width: String,
    pub height: String,
    pub font: String,
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
    pub fn new(days: &[DayCount], size: &Size) -> Chart {
        let max = days.iter().map(|day| day.referrals).max().unwrap_or(0);
        let total: i64 = days.iter().map(|day| day.referrals).sum();
        // Room on the left for the highest value, right-aligned before the axis.
        let digits = max.max(1).to_string().len() as f64;
        let left = (digits * size.font * 0.62 + 10.0).max(2.0 * size.font);
        let plot_width = size.width - left - size.right;
        let plot_height = size.height - size.top - size.bottom;
        let baseline = size.height - size.bottom;
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
                    x: n(left + index as f64 * step + (step - bar_width) / 2.0),
                    y: n(baseline - height),
                    width: n(bar_width),
                    height: n(height),
                    day: day.day.format("%Y-%m-%d").to_string(),
                    referrals: day.referrals,
                }
            })
            .collect();
        let labels = axis_labels(days, size, left, step);
        let summary = summary(days, total, max);
        let busy_days = days
            .iter()
            .rev()
            .filter(|day| day.referrals > 0)
            .map(|day| (day.day.format("%Y-%m-%d").to_string(), day.referrals))
            .collect();
        Chart {
            name: size.name,
            width: n(size.width),
            height: n(size.height),
            font: n(size.font),
            bars,
            labels,
            max,
            total,
            plot_left: n(left),
            plot_right: n(size.width - size.right),
            plot_top: n(size.top),
            baseline: n(baseline),
            label_y: n(baseline + size.font + 6.0),
            max_label_y: n(size.top + size.font / 3.0),
            zero_label_y: n(baseline + size.font / 3.0),
            value_x: n(left - 6.0),
            summary,
            busy_days,
        }
    }
}

/// A label under every `label_every`th bar, counted back from the newest day.
fn axis_labels(days: &[DayCount], size: &Size, left: f64, step: f64) -> Vec<AxisLabel> {
    let last = days.len().saturating_sub(1);
    days.iter()
        .enumerate()
        .filter(|(index, _)| (last - index).is_multiple_of(size.label_every))
        .map(|(index, day)| AxisLabel {
            x: if index == last {
                n(size.width - size.right)
            } else {
                n(left + index as f64 * step + step / 2.0)
            },
            text: day.day.format("%b %-d").to_string(),
            anchor: if index == last { "end" } else { "middle" },
        })
        .collect()
}

/// The chart in words: the total, the period and the busiest day.
fn summary(days: &[DayCount], total: i64, max: i64) -> String {
    match (days.first(), days.last()) {
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
        let chart = Chart::new(&days, &WIDE);
        assert_eq!(chart.bars.len(), 90);
        assert_eq!(chart.max, 4);
        assert_eq!(chart.total, 5);
        assert_eq!(chart.bars[89].height, n(WIDE.height - WIDE.top - WIDE.bottom));
        assert_eq!(chart.bars[0].height, "0.0");
        assert_eq!(chart.labels.len(), 6);
        assert_eq!(chart.busy_days[0], ("2026-11-29".to_string(), 4));
        assert!(chart.summary.contains("5 referrals"));
        let narrow = Chart::new(&days, &NARROW);
        assert_eq!(narrow.labels.len(), 3, "fewer, larger labels on a phone");
    }

    #[test]
    fn the_newest_label_ends_inside_the_drawing() {
        let first = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
        let days: Vec<DayCount> = (0..90)
            .map(|i| DayCount {
                day: first + chrono::Duration::days(i),
                referrals: 12_345,
            })
            .collect();
        for size in [&WIDE, &NARROW] {
            let chart = Chart::new(&days, size);
            let newest = chart.labels.last().unwrap();
            assert_eq!(
                (newest.x.as_str(), newest.anchor),
                (chart.plot_right.as_str(), "end")
            );
            // Five digits, right-aligned before the axis, start inside the drawing.
            let value_x: f64 = chart.value_x.parse().unwrap();
            assert!(value_x - 5.0 * size.font * 0.62 >= 0.0, "{}", size.name);
        }
    }
}
