//! Server-rendered SVG bar charts: a y axis with round ticks, a label per
//! bar group (thinned when there are many), a legend, and a `<title>` per bar
//! for the exact figure; optionally values in millionths shown as percent
//! and horizontal threshold lines ([`bars_with`]). No script and no `style` attribute: colours come
//! from the stylesheet by the series' class, so the page's CSP holds.

use std::fmt::Write;

/// Bars per chart at most (a 366-day period is the longest asked for).
pub const MAX_GROUPS: usize = 400;
/// Series per chart at most.
pub const MAX_SERIES: usize = 8;

/// One named series: `class` picks its colour in the stylesheet (`s-…`).
pub struct Series<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub values: Vec<i64>,
}

/// Side by side (each series its own bar) or stacked (one bar of parts).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Grouped,
    Stacked,
}

/// The narrowest chart; more bars make it wider, up to [`MAX_W`].
const MIN_W: f64 = 560.0;
const MAX_W: f64 = 1100.0;
const H: f64 = 250.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 34.0;

/// How a chart's values read on its axis and in its titles.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unit {
    /// Whole counts (axis: 1.2k, 3M; titles: exact).
    Count,
    /// Millionths of a whole, shown as percent (50 000 → 5%): rates.
    PerMillion,
}

/// A horizontal line across the plot at `value` (in the chart's unit), a
/// threshold; named in the legend, its colour by `class` (`m-…`).
pub struct Marker<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub value: i64,
}

/// Markers per chart at most.
pub const MAX_MARKERS: usize = 4;

/// A bar chart of `series` over `labels` (one group per label), titled
/// `title` for assistive technology. Longer inputs are cut to
/// [`MAX_GROUPS`] and [`MAX_SERIES`]; missing values count as zero.
pub fn bars(title: &str, labels: &[String], series: &[Series<'_>], layout: Layout) -> String {
    bars_with(title, labels, series, layout, Unit::Count, &[])
}

/// [`bars`] in `unit`, with `markers` drawn across the plot (the axis
/// reaches the highest of them, so a threshold is always in view).
pub fn bars_with(
    title: &str,
    labels: &[String],
    series: &[Series<'_>],
    layout: Layout,
    unit: Unit,
    markers: &[Marker<'_>],
) -> String {
    let markers = &markers[..markers.len().min(MAX_MARKERS)];
    let labels = &labels[..labels.len().min(MAX_GROUPS)];
    let series = &series[..series.len().min(MAX_SERIES)];
    let value = |s: &Series<'_>, i: usize| s.values.get(i).copied().unwrap_or(0).max(0);
    let top = (0..labels.len())
        .map(|i| match layout {
            Layout::Grouped => series.iter().map(|s| value(s, i)).max().unwrap_or(0),
            Layout::Stacked => series.iter().map(|s| value(s, i)).sum(),
        })
        .max()
        .unwrap_or(0)
        .max(markers.iter().map(|m| m.value.max(0)).max().unwrap_or(0));
    let (step, max) = ticks(top);
    // About 23 units per bar group: a month is wider than a day.
    let width = (23.0 * labels.len() as f64).clamp(MIN_W, MAX_W);
    let plot_w = width - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y = |v: i64| TOP + plot_h - (v as f64 / max as f64) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {H}\" width=\"{width}\" \
         height=\"{H}\" role=\"img\" aria-label=\"{}\" class=\"chart\">",
        escape(title)
    );
    // Legend, left to right above the plot.
    let mut lx = LEFT;
    for s in series {
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"9\" width=\"14\" height=\"14\" class=\"{}\"/>\
             <text x=\"{tx}\" y=\"22\" class=\"legend\">{}</text>",
            escape(s.class),
            escape(s.name),
            tx = lx + 19.0
        );
        lx += 32.0 + 9.0 * s.name.chars().count() as f64;
    }
    for m in markers {
        let _ = write!(
            svg,
            "<line x1=\"{lx}\" y1=\"16\" x2=\"{x2}\" y2=\"16\" class=\"marker {}\"/>\
             <text x=\"{tx}\" y=\"22\" class=\"legend\">{}</text>",
            escape(m.class),
            escape(m.name),
            x2 = lx + 14.0,
            tx = lx + 19.0
        );
        lx += 32.0 + 9.0 * m.name.chars().count() as f64;
    }
    // Y axis: gridlines and labels at each tick.
    let mut v = 0;
    while v <= max {
        let yy = y(v);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{x2}\" y2=\"{yy:.1}\" class=\"grid\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\" class=\"axis\">{}</text>",
            axis_label(unit, v),
            x2 = width - RIGHT,
            tx = LEFT - 6.0,
            ty = yy + 4.0
        );
        v += step;
    }
    let n = labels.len().max(1) as f64;
    let group = plot_w / n;
    let every = labels.len().div_ceil(8).max(1);
    for (i, label) in labels.iter().enumerate() {
        let gx = LEFT + i as f64 * group;
        let inner = group * 0.8;
        let mut base = 0;
        for (k, s) in series.iter().enumerate() {
            let v = value(s, i);
            let (x, w, y0, y1) = match layout {
                Layout::Grouped => {
                    let w = inner / series.len().max(1) as f64;
                    (gx + group * 0.1 + k as f64 * w, w, y(v), y(0))
                }
                Layout::Stacked => {
                    let r = (gx + group * 0.1, inner, y(base + v), y(base));
                    base += v;
                    r
                }
            };
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y0:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" class=\"{}\">\
                 <title>{} {}: {}</title></rect>",
                escape(s.class),
                escape(label),
                escape(s.name),
                exact(unit, v),
                w = (w - 0.5).max(0.5),
                h = (y1 - y0).max(0.0),
            );
        }
        // Counted from the last bar, so the newest is always labelled; a
        // label too wide to centre under the last bar ends at the edge.
        if (labels.len() - 1 - i) % every == 0 {
            let half = 4.3 * label.chars().count() as f64;
            let (tx, anchor) = if gx + group / 2.0 + half > width - 2.0 {
                (width - 2.0, "end")
            } else {
                (gx + group / 2.0, "middle")
            };
            let _ = write!(
                svg,
                "<text x=\"{tx:.1}\" y=\"{ty}\" text-anchor=\"{anchor}\" class=\"axis\">{}</text>",
                escape(label),
                ty = H - BOTTOM + 20.0
            );
        }
    }
    for m in markers {
        let yy = y(m.value.max(0));
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{x2}\" y2=\"{yy:.1}\" class=\"marker {}\">\
             <title>{}</title></line>",
            escape(m.class),
            escape(m.name),
            x2 = width - RIGHT
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{x2}\" y2=\"{b}\" class=\"baseline\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" class=\"baseline\"/></svg>",
        b = TOP + plot_h,
        x2 = width - RIGHT
    );
    svg
}

/// A round tick step for values up to `top` (1, 2 or 5 times a power of
/// ten, four or five ticks) and the axis maximum, a multiple of it.
fn ticks(top: i64) -> (i64, i64) {
    let top = top.max(1);
    let rough = (top as f64 / 4.0).max(1.0);
    let mag = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * mag)
        .max(1.0) as i64;
    let max = ((top + step - 1) / step) * step;
    (step, max)
}

/// 1200 → "1.2k", 3 000 000 → "3M": axis labels stay narrow.
fn short(v: i64) -> String {
    match v {
        v if v >= 1_000_000 && v % 100_000 == 0 => trim(v as f64 / 1_000_000.0, "M"),
        v if v >= 1_000 && v % 100 == 0 => trim(v as f64 / 1_000.0, "k"),
        v => v.to_string(),
    }
}

fn axis_label(unit: Unit, v: i64) -> String {
    match unit {
        Unit::Count => short(v),
        Unit::PerMillion => percent(v),
    }
}

fn exact(unit: Unit, v: i64) -> String {
    match unit {
        Unit::Count => v.to_string(),
        Unit::PerMillion => percent(v),
    }
}

/// Millionths as percent with at most three decimals: 250 000 → "25%",
/// 1 000 → "0.1%", 12 346 → "1.235%" (rounded; rates are not exact anyway).
pub fn percent(millionths: i64) -> String {
    let s = format!("{:.3}", millionths as f64 / 10_000.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// A rate (0..=1) in millionths, for [`Unit::PerMillion`].
pub fn millionths(rate: f64) -> i64 {
    if rate.is_finite() {
        (rate * 1_000_000.0).round().clamp(0.0, 1e12) as i64
    } else {
        0
    }
}

fn trim(x: f64, unit: &str) -> String {
    let s = format!("{x:.1}");
    format!("{}{unit}", s.strip_suffix(".0").unwrap_or(&s))
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_top() {
        assert_eq!(ticks(0), (1, 1));
        assert_eq!(ticks(3), (1, 3));
        assert_eq!(ticks(7), (2, 8));
        assert_eq!(ticks(100), (50, 100));
        assert_eq!(ticks(1234), (500, 1500));
        assert_eq!(short(1500), "1.5k");
        assert_eq!(short(2_000_000), "2M");
        assert_eq!(short(950), "950");
    }

    #[test]
    fn a_chart_has_axes_labels_a_legend_and_exact_titles() {
        let labels: Vec<String> = ["Mon", "Tue"].iter().map(|s| s.to_string()).collect();
        let s = [
            Series {
                name: "Accepted",
                class: "s-accepted",
                values: vec![10, 4],
            },
            Series {
                name: "Bounced <x>",
                class: "s-bounced",
                values: vec![1],
            },
        ];
        let svg = bars("Mail & more", &labels, &s, Layout::Grouped);
        assert!(svg.contains("aria-label=\"Mail &amp; more\""));
        assert!(svg.contains(">Mon</text>") && svg.contains(">Tue</text>"));
        assert!(svg.contains("class=\"legend\">Accepted</text>"));
        assert!(svg.contains("Bounced &lt;x&gt;"));
        assert!(svg.contains("<title>Tue Bounced &lt;x&gt;: 0</title>"));
        assert!(svg.contains("<title>Mon Accepted: 10</title>"));
        // Y ticks 0, 5, 10 (top 10 → step 5).
        assert!(
            svg.contains("class=\"axis\">5</text>") && svg.contains("class=\"axis\">10</text>")
        );
        assert!(!svg.contains("style="));
    }

    #[test]
    fn rates_read_as_percent_and_thresholds_stay_in_view() {
        assert_eq!(percent(250_000), "25%");
        assert_eq!(percent(1_000), "0.1%");
        assert_eq!(percent(12_346), "1.235%"); // rounded to three decimals
        assert_eq!(percent(0), "0%");
        assert_eq!(millionths(0.25), 250_000);
        assert_eq!(millionths(f64::NAN), 0);
        let labels: Vec<String> = ["1 Dec", "2 Dec"].iter().map(|s| s.to_string()).collect();
        let s = [Series {
            name: "Bounce rate",
            class: "s-bounced",
            values: vec![0, 20_000],
        }];
        let marks = [
            Marker {
                name: "Warning at 5%",
                class: "m-warning",
                value: 50_000,
            },
            Marker {
                name: "Pause at 10%",
                class: "m-pause",
                value: 100_000,
            },
        ];
        let svg = bars_with("r", &labels, &s, Layout::Grouped, Unit::PerMillion, &marks);
        assert!(
            svg.contains("<title>2 Dec Bounce rate: 2%</title>"),
            "{svg}"
        );
        // The axis reaches the pause line (10%): ticks 0, 5%, 10%.
        assert!(svg.contains("class=\"axis\">10%</text>"), "{svg}");
        assert!(svg.contains("class=\"axis\">5%</text>"), "{svg}");
        // The pause line at the plot's top, the warning one half-way.
        assert!(
            svg.contains(&format!("y2=\"{TOP:.1}\" class=\"marker m-pause\">")),
            "{svg}"
        );
        let half = TOP + (H - TOP - BOTTOM) / 2.0;
        assert!(
            svg.contains(&format!("y2=\"{half:.1}\" class=\"marker m-warning\">")),
            "{svg}"
        );
        assert!(svg.contains("class=\"legend\">Pause at 10%</text>"));
        assert_eq!(svg.matches("class=\"marker m-warning\"").count(), 2);
        assert!(!svg.contains("style="));
    }

    #[test]
    fn stacked_bars_sum_and_long_inputs_are_cut() {
        let labels: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let s = [Series {
            name: "a",
            class: "s-a",
            values: vec![1; 1000],
        }];
        let svg = bars("t", &labels, &s, Layout::Stacked);
        assert_eq!(svg.matches("<title>").count(), MAX_GROUPS);
        let two = [
            Series {
                name: "a",
                class: "s-a",
                values: vec![3],
            },
            Series {
                name: "b",
                class: "s-b",
                values: vec![5],
            },
        ];
        // 3 + 5 = 8 on a 0..8 axis: the top bar ends at the plot's top.
        let svg = bars("t", &labels[..1], &two, Layout::Stacked);
        assert!(svg.contains(&format!("y=\"{TOP:.1}\"")), "{svg}");
    }
}
