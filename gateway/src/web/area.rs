//! The area trends page: the report of [`crate::read::area`] (policy, disclosure control and
//! the audit entry included) as charts drawn on the server in SVG — the authority's attendance
//! and persistent absence term by term, and each school's and area's persistent absence in the
//! latest term — each with the table it is drawn from, which is also what a screen reader reads.
//! No script is needed. `/reports/area.csv` downloads the same report.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header;
use serde::{Deserialize, Serialize};

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::read::area::table::{Figure, Level, Number};
use crate::read::area::{self, AreaQuery, AreaReport, ReportRow};
use crate::web::render::{self, Page};
use crate::web::session::SignedIn;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/reports/area", get(page))
        .route("/reports/area.csv", get(csv))
}

#[derive(Debug, Deserialize)]
struct Params {
    purpose: Option<String>,
}

/// The report's query: the page's purpose (education welfare unless it names another); a
/// query that could not be read is refused by the report, so the refusal is audited.
fn query(p: Result<Query<Params>, QueryRejection>) -> Result<AreaQuery, Error> {
    let Query(p) = p.map_err(|e| Error::invalid(format!("query: {}", e.status())))?;
    Ok(AreaQuery {
        purpose: Some(p.purpose.unwrap_or_else(|| "education_welfare".into())),
        level: None,
        key: None,
    })
}

async fn csv(
    State(gw): State<Gateway>,
    who: SignedIn,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    match area::report(&gw, &who.principal, query(params)).await {
        Ok(report) => match area::to_csv(&report) {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"area-report.csv\"",
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => render::error_page(Some(&who), &e),
        },
        Err(e) => render::error_page(Some(&who), &e),
    }
}

async fn page(
    State(gw): State<Gateway>,
    who: SignedIn,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    match area::report(&gw, &who.principal, query(params)).await {
        Ok(report) => {
            let view = View::of(&report);
            Page::new("area.html", "Area trends", &who)
                .with("report", &report)
                .with("view", view)
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}

/// What the template draws.
#[derive(Debug, Serialize)]
struct View {
    has_attendance: bool,
    has_exclusions: bool,
    has_social_care: bool,
    latest_term: Option<String>,
    trend: Option<LineChart>,
    school_bars: Option<BarChart>,
    area_bars: Option<BarChart>,
    authority: Vec<TableRow>,
    schools: Vec<TableRow>,
    areas: Vec<TableRow>,
}

/// A row of a table, each figure as text (`c` withheld).
#[derive(Debug, Serialize)]
struct TableRow {
    key: String,
    name: Option<String>,
    term: String,
    pupils: String,
    attendance_rate: String,
    persistent_absentees: String,
    persistent_absence_rate: String,
    suspended_pupils: String,
    permanently_excluded_pupils: String,
    persistent_absentees_known_to_social_care: String,
    suspended_or_excluded_known_to_social_care: String,
    education_data_as_of: String,
}

fn text(f: Option<Figure>) -> String {
    f.map(|f| f.csv()).unwrap_or_default()
}

fn rate(f: Option<Figure>) -> Option<f64> {
    match f?.value? {
        Number::Rate(r) => Some(r),
        Number::Count(n) => Some(n as f64),
    }
}

impl TableRow {
    fn of(r: &ReportRow) -> TableRow {
        TableRow {
            key: r.key.clone(),
            name: r.name.clone(),
            term: r.term.clone(),
            pupils: text(r.pupils),
            attendance_rate: text(r.attendance_rate),
            persistent_absentees: text(r.persistent_absentees),
            persistent_absence_rate: text(r.persistent_absence_rate),
            suspended_pupils: text(r.suspended_pupils),
            permanently_excluded_pupils: text(r.permanently_excluded_pupils),
            persistent_absentees_known_to_social_care: text(
                r.persistent_absentees_known_to_social_care,
            ),
            suspended_or_excluded_known_to_social_care: text(
                r.suspended_or_excluded_known_to_social_care,
            ),
            education_data_as_of: r.education_data_as_of.clone().unwrap_or_default(),
        }
    }
}

/// A line chart over terms: each series' points, joined where consecutive terms both have a
/// published value (a withheld one leaves a gap rather than a guess).
#[derive(Debug, Serialize)]
struct LineChart {
    width: u32,
    height: u32,
    left: u32,
    bottom: u32,
    series: Vec<Series>,
    x_labels: Vec<Label>,
    y_ticks: Vec<Label>,
}

#[derive(Debug, Serialize)]
struct Series {
    name: &'static str,
    colour: &'static str,
    dash: &'static str,
    lines: Vec<String>,
    points: Vec<Point>,
}

#[derive(Debug, Serialize)]
struct Point {
    x: f64,
    y: f64,
    title: String,
}

#[derive(Debug, Serialize)]
struct Label {
    x: f64,
    y: f64,
    text: String,
}

/// Horizontal bars, one per school or area, 0–100 %.
#[derive(Debug, Serialize)]
struct BarChart {
    width: u32,
    height: u32,
    left: u32,
    bars: Vec<Bar>,
}

#[derive(Debug, Serialize)]
struct Bar {
    label: String,
    y: u32,
    width: f64,
    text: String,
    text_x: f64,
}

const W: u32 = 640;
const H: u32 = 260;
const LEFT: u32 = 48;
const BOTTOM: u32 = 36;

fn line_chart(terms: &[String], rows: &[&ReportRow]) -> LineChart {
    let plot_w = f64::from(W - LEFT - 16);
    let plot_h = f64::from(H - BOTTOM - 12);
    let n = terms.len().max(1);
    let x = |i: usize| {
        f64::from(LEFT)
            + if n == 1 {
                plot_w / 2.0
            } else {
                plot_w * i as f64 / (n - 1) as f64
            }
    };
    let y = |v: f64| 12.0 + plot_h * (1.0 - v.clamp(0.0, 100.0) / 100.0);
    let mut series = Vec::new();
    for (name, colour, dash, pick) in [
        (
            "Attendance rate (%)",
            "#1d70b8",
            "",
            (|r: &ReportRow| rate(r.attendance_rate)) as fn(&ReportRow) -> Option<f64>,
        ),
        (
            "Persistent absence rate (%)",
            "#d4351c",
            "6 4",
            |r: &ReportRow| rate(r.persistent_absence_rate),
        ),
    ] {
        let values: Vec<Option<f64>> = terms
            .iter()
            .map(|t| rows.iter().find(|r| &r.term == t).and_then(|r| pick(r)))
            .collect();
        let mut lines = Vec::new();
        let mut run: Vec<String> = Vec::new();
        let mut points = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    run.push(format!("{:.1},{:.1}", x(i), y(*v)));
                    points.push(Point {
                        x: x(i),
                        y: y(*v),
                        title: format!("{}: {v:.1} %", terms[i]),
                    });
                }
                None => {
                    if run.len() > 1 {
                        lines.push(run.join(" "));
                    }
                    run.clear();
                }
            }
        }
        if run.len() > 1 {
            lines.push(run.join(" "));
        }
        series.push(Series {
            name,
            colour,
            dash,
            lines,
            points,
        });
    }
    LineChart {
        width: W,
        height: H,
        left: LEFT,
        bottom: H - BOTTOM,
        series,
        x_labels: terms
            .iter()
            .enumerate()
            .map(|(i, t)| Label {
                x: x(i),
                y: f64::from(H - BOTTOM + 18),
                text: t.clone(),
            })
            .collect(),
        y_ticks: [0.0, 25.0, 50.0, 75.0, 100.0]
            .into_iter()
            .map(|v| Label {
                x: f64::from(LEFT - 6),
                y: y(v),
                text: format!("{v:.0}"),
            })
            .collect(),
    }
}

fn bar_chart(rows: &[&ReportRow]) -> Option<BarChart> {
    if rows.is_empty() {
        return None;
    }
    let left = 120u32;
    let plot = f64::from(W - left - 60);
    let bars = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let v = rate(r.persistent_absence_rate);
            let width = v.map_or(0.0, |v| plot * v.clamp(0.0, 100.0) / 100.0);
            Bar {
                label: match &r.name {
                    Some(n) => format!("{} {n}", r.key),
                    None => r.key.clone(),
                },
                y: 8 + 26 * i as u32,
                width,
                text: v.map_or_else(|| "withheld".into(), |v| format!("{v:.1} %")),
                text_x: f64::from(left) + width + 6.0,
            }
        })
        .collect::<Vec<_>>();
    Some(BarChart {
        width: W,
        height: 16 + 26 * bars.len() as u32,
        left,
        bars,
    })
}

impl View {
    fn of(report: &AreaReport) -> View {
        let has = |m: &str| report.measures.contains(&m);
        let of_level =
            |l: Level| -> Vec<&ReportRow> { report.rows.iter().filter(|r| r.level == l).collect() };
        let authority = of_level(Level::Authority);
        let mut schools = of_level(Level::School);
        let mut areas = of_level(Level::Area);
        let latest = report.terms.last().cloned();
        fn latest_of<'a>(rows: &[&'a ReportRow], latest: Option<&String>) -> Vec<&'a ReportRow> {
            rows.iter()
                .copied()
                .filter(|r| Some(&r.term) == latest)
                .collect()
        }
        let attendance = has("attendance_rate");
        let trend =
            (attendance && !authority.is_empty()).then(|| line_chart(&report.terms, &authority));
        let school_bars = if attendance {
            bar_chart(&latest_of(&schools, latest.as_ref()))
        } else {
            None
        };
        let area_bars = if attendance {
            bar_chart(&latest_of(&areas, latest.as_ref()))
        } else {
            None
        };
        // Tables by school or area, then term.
        schools.sort_by(|a, b| a.key.cmp(&b.key));
        areas.sort_by(|a, b| a.key.cmp(&b.key));
        View {
            has_attendance: attendance,
            has_exclusions: has("suspended_pupils"),
            has_social_care: has("persistent_absentees_known_to_social_care")
                || has("suspended_or_excluded_known_to_social_care"),
            latest_term: latest.clone(),
            trend,
            school_bars,
            area_bars,
            authority: authority.into_iter().map(TableRow::of).collect(),
            schools: schools.into_iter().map(TableRow::of).collect(),
            areas: areas.into_iter().map(TableRow::of).collect(),
        }
    }
}
