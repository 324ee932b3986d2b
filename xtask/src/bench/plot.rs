//! SVG bar charts of the report's tables, written beside report.md and linked from it: what
//! people look at first. Plain SVG text, no dependency: horizontal bars, each made of stacked
//! segments (user and kernel time, say), with a legend and the value at the end of each bar.

use std::fmt::Write as _;

/// One bar: its label and its segments, stacked left to right.
pub struct Bar {
    pub label: String,
    pub segments: Vec<Segment>,
}

pub struct Segment {
    pub value: f64,
    /// Index into [`COLOURS`] and the chart's legend.
    pub series: usize,
}

/// Colour-blind-safe (Okabe and Ito).
const COLOURS: [&str; 4] = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"];
const WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 260.0;
const BAR_HEIGHT: f64 = 18.0;
const GAP: f64 = 8.0;
const TOP: f64 = 56.0;

/// A chart titled `title`, bars scaled to the longest, values shown with `unit`; `series`
/// names the segments' colours in the legend.
pub fn horizontal_bars(title: &str, unit: &str, series: &[&str], bars: &[Bar]) -> String {
    let total = |bar: &Bar| bar.segments.iter().map(|s| s.value.max(0.0)).sum::<f64>();
    let longest = bars
        .iter()
        .map(total)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let plot_width = WIDTH - LABEL_WIDTH - 90.0;
    let height = TOP + bars.len() as f64 * (BAR_HEIGHT + GAP) + 16.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"8\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    );
    let mut x = 8.0;
    for (index, name) in series.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"32\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"42\">{}</text>",
            COLOURS[index % COLOURS.len()],
            x + 16.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
    for (row, bar) in bars.iter().enumerate() {
        let y = TOP + row as f64 * (BAR_HEIGHT + GAP);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LABEL_WIDTH - 8.0,
            y + BAR_HEIGHT - 5.0,
            escape(&bar.label)
        );
        let mut left = LABEL_WIDTH;
        for segment in &bar.segments {
            let width = segment.value.max(0.0) / longest * plot_width;
            let _ = writeln!(
                svg,
                "<rect x=\"{left:.1}\" y=\"{y}\" width=\"{width:.1}\" height=\"{BAR_HEIGHT}\" \
                 fill=\"{}\"/>",
                COLOURS[segment.series % COLOURS.len()]
            );
            left += width;
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\">{} {}</text>",
            left + 6.0,
            y + BAR_HEIGHT - 5.0,
            number(total(bar)),
            escape(unit)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_longest_and_stack_their_segments() {
        let svg = horizontal_bars(
            "CPU <per> request",
            "µs",
            &["user", "kernel"],
            &[
                Bar {
                    label: "balancer".into(),
                    segments: vec![
                        Segment {
                            value: 5.0,
                            series: 0,
                        },
                        Segment {
                            value: 15.0,
                            series: 1,
                        },
                    ],
                },
                Bar {
                    label: "nginx".into(),
                    segments: vec![Segment {
                        value: 10.0,
                        series: 0,
                    }],
                },
            ],
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("CPU &lt;per&gt; request"), "escaped title");
        // The longest bar (20) spans the plot: 760 - 260 - 90 = 410 px, a quarter user.
        assert!(
            svg.contains("x=\"260.0\" y=\"56\" width=\"102.5\""),
            "{svg}"
        );
        assert!(
            svg.contains("x=\"362.5\" y=\"56\" width=\"307.5\""),
            "{svg}"
        );
        assert!(svg.contains(">20.0 µs</text>"), "{svg}");
        assert!(svg.contains("width=\"205.0\""), "nginx at half: {svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
