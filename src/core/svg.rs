//! A small SVG line-chart writer for the HTML report: linear axes with rounded ticks and units,
//! one polyline per series, a legend, and optional labelled vertical markers (phase
//! boundaries). Pure text out; no fonts or scripts are referenced, so a chart renders offline.

use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;
/// Distinguishable on white, also in grey print.
pub const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// One line: its legend label and its points (x, y) in axis units.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Vertical markers: x and a label (a phase starting there).
    pub markers: Vec<(f64, String)>,
    /// The y axis from 0 up to at least this (fractions: 1.0).
    pub y_at_least: Option<f64>,
}

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rounded tick positions covering `[lo, hi]`: steps of 1, 2 or 5 × 10^k, about five of them.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// The plot area's scale: the axes' ranges (widened to their outer ticks) and the ticks.
struct Frame {
    x_min: f64,
    x_max: f64,
    y_max: f64,
    x_ticks: Vec<f64>,
    y_ticks: Vec<f64>,
}

/// The plot area's width and height.
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

impl Frame {
    fn of(c: &Chart) -> Self {
        let points = || c.series.iter().flat_map(|s| s.points.iter());
        let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
            points().map(pick).filter(|v| v.is_finite()).fold(init, f)
        };
        let (x_lo, x_hi) = (
            fold(f64::min, f64::INFINITY, |p| p.0),
            fold(f64::max, f64::NEG_INFINITY, |p| p.0),
        );
        let y_hi = fold(f64::max, 0.0, |p| p.1).max(c.y_at_least.unwrap_or(0.0));
        let x_hi = if x_hi > x_lo { x_hi } else { x_lo + 1.0 };
        let y_hi = if y_hi > 0.0 { y_hi } else { 1.0 };
        let x_ticks = ticks(x_lo, x_hi);
        let y_ticks = ticks(0.0, y_hi);
        Self {
            x_max: x_ticks.last().copied().unwrap_or(x_hi).max(x_hi),
            x_min: x_ticks.first().copied().unwrap_or(x_lo).min(x_lo),
            y_max: y_ticks.last().copied().unwrap_or(y_hi).max(y_hi),
            x_ticks,
            y_ticks,
        }
    }

    fn sx(&self, x: f64) -> f64 {
        LEFT + (x - self.x_min) / (self.x_max - self.x_min) * PLOT_W
    }

    fn sy(&self, y: f64) -> f64 {
        TOP + PLOT_H - y / self.y_max * PLOT_H
    }
}

/// The chart as an `<svg>` element, or a note when no series has two points.
pub fn line_chart(c: &Chart) -> String {
    if c.series.iter().all(|s| s.points.len() < 2) {
        return format!(
            "<p class=\"empty\">{}: no data to draw</p>",
            escape(&c.title)
        );
    }
    let f = Frame::of(c);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = escape(&c.title)
    );
    let _ = write!(
        o,
        "<text x=\"{LEFT}\" y=\"16\" class=\"title\">{}</text>",
        escape(&c.title)
    );
    axes(&mut o, &f, c);
    for (x, label) in &c.markers {
        let _ = write!(
            o,
            "<line class=\"marker\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{TOP}\" y2=\"{:.1}\"/><text class=\"marker\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            f.sx(*x),
            f.sx(*x),
            TOP + PLOT_H,
            f.sx(*x) + 3.0,
            TOP + 10.0,
            escape(label)
        );
    }
    for (i, s) in c.series.iter().enumerate() {
        series(&mut o, &f, i, s);
    }
    o.push_str("</svg>");
    o
}

/// The grid, the ticks, both axes and their labels.
fn axes(o: &mut String, f: &Frame, c: &Chart) {
    let ph = PLOT_H;
    for &y in &f.y_ticks {
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            f.sy(y),
            f.sy(y),
            LEFT - 6.0,
            f.sy(y) + 4.0,
            tick_label(y)
        );
    }
    for &x in &f.x_ticks {
        let _ = write!(
            o,
            "<line class=\"axis\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            f.sx(x),
            f.sx(x),
            TOP + ph,
            TOP + ph + 4.0,
            f.sx(x),
            TOP + ph + 16.0,
            tick_label(x)
        );
    }
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/>",
        WIDTH - RIGHT,
        TOP + ph,
        TOP + ph,
        TOP + ph
    );
    let _ = write!(
        o,
        "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text class=\"label\" transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        LEFT + PLOT_W / 2.0,
        HEIGHT - 6.0,
        escape(&c.x_label),
        TOP + ph / 2.0,
        escape(&c.y_label)
    );
}

/// Series `i`'s line and its legend entry.
fn series(o: &mut String, f: &Frame, i: usize, s: &Series) {
    let color = PALETTE[i % PALETTE.len()];
    let d: Vec<String> = s
        .points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .enumerate()
        .map(|(j, &(x, y))| {
            format!(
                "{}{:.1},{:.1}",
                if j == 0 { 'M' } else { 'L' },
                f.sx(x),
                f.sy(y)
            )
        })
        .collect();
    let _ = write!(
        o,
        "<path class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" d=\"{}\"><title>{}</title></path>",
        d.join(""),
        escape(&s.label)
    );
    let ly = TOP + 8.0 + 16.0 * i as f64;
    let _ = write!(
        o,
        "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/><text class=\"legend\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
        WIDTH - RIGHT - 24.0,
        WIDTH - RIGHT - 6.0,
        WIDTH - RIGHT - 28.0,
        ly + 4.0,
        escape(&s.label)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0);
        assert_eq!(t.len(), 6);
        assert!(
            (t[5] - 1.0).abs() < 1e-12 && (t[1] - 0.2).abs() < 1e-12,
            "{t:?}"
        );
        assert_eq!(ticks(0.0, 93.0), [0.0, 20.0, 40.0, 60.0, 80.0]);
        let t = ticks(12.0, 480.0);
        assert!(t.first().unwrap() >= &0.0 && t.len() <= 7, "{t:?}");
    }

    #[test]
    fn a_chart_draws_each_series_with_a_legend_and_escapes_text() {
        let c = Chart {
            title: "TTFT <cold>".into(),
            x_label: "ms".into(),
            y_label: "fraction".into(),
            series: vec![
                Series {
                    label: "vllm".into(),
                    points: vec![(10.0, 0.0), (20.0, 0.5), (30.0, 1.0)],
                },
                Series {
                    label: "sglang & co".into(),
                    points: vec![(15.0, 0.0), (40.0, 1.0)],
                },
            ],
            markers: vec![(12.0, "warm".into())],
            y_at_least: Some(1.0),
        };
        let svg = line_chart(&c);
        assert_eq!(svg.matches("<path class=\"series\"").count(), 2);
        assert!(svg.contains("d=\"M") && svg.contains("L"), "{svg}");
        assert!(svg.contains("TTFT &lt;cold&gt;") && svg.contains("sglang &amp; co"));
        assert!(svg.contains(">warm</text>"));
        let empty = line_chart(&Chart {
            title: "nothing".into(),
            ..Chart::default()
        });
        assert!(empty.contains("no data to draw") && !empty.contains("<svg"));
    }
}
