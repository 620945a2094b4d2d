//! The gains plot: per held-out task, the gain of each base over base 0 with its 95% confidence interval,
//! one panel per mode (linear probe, few-shot), and, when the contributing sites evaluated the
//! candidates, a third panel: each site's gain of every candidate over the base before it, on the
//! site's own data. Written as `gains.png` and `gains.svg`.

use std::{path::Path, sync::OnceLock};

use plotters::{coord::Shift, prelude::*};

use super::{gains, heldout::BaseScores};

/// Pixel size of one panel.
const PANEL: (u32, u32) = (550, 440);

/// One plotted point: iteration, mean gain, CI half-width.
pub type Point = (f64, f64, f64);

/// Named series of points (a task's or a site's).
pub type Series = Vec<(String, Vec<Point>)>;

/// One panel: title, x-axis description, series.
struct Panel {
    title: String,
    x_desc: &'static str,
    series: Series,
}

/// Writes `gains.png` and `gains.svg` under `root`: the held-out panels, and the sites' panel when
/// `sites` has any series.
pub fn write(root: &Path, scores: &[BaseScores], sites: &Series) -> anyhow::Result<()> {
    register_font()?;
    let mut panels: Vec<Panel> = [
        ("linear probe (frozen body)", true),
        ("few-shot fine-tune", false),
    ]
    .into_iter()
    .map(|(title, probe)| Panel {
        title: format!("{title}: gain over base 0, 95% CI"),
        x_desc: "fused iteration (0 = original model)",
        series: series(scores, probe),
    })
    .collect();
    if !sites.is_empty() {
        panels.push(Panel {
            title: "gain at the contributing sites (own data, vs previous base)".into(),
            x_desc: "candidate iteration",
            series: sites.clone(),
        });
    }
    let size = (PANEL.0 * panels.len() as u32, PANEL.1);
    let png = root.join("gains.png");
    draw(BitMapBackend::new(&png, size).into_drawing_area(), &panels)?;
    let svg = root.join("gains.svg");
    draw(SVGBackend::new(&svg, size).into_drawing_area(), &panels)?;
    Ok(())
}

/// Registers the embedded DejaVu Sans as "sans-serif" (no system fonts needed), once per process.
fn register_font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn fail(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

/// Per task (in first-seen order), the points of one mode (`probe` or few-shot).
fn series(scores: &[BaseScores], probe: bool) -> Series {
    let mut out: Vec<(String, Vec<Point>)> = Vec::new();
    for s in scores {
        let (p, f) = gains(scores, s);
        let (m, h) = if probe { p } else { f };
        if m.is_nan() {
            continue; // not measured (e.g. --probe-only)
        }
        let point = (s.iteration as f64, m, if h.is_finite() { h } else { 0.0 });
        match out.iter_mut().find(|(t, _)| *t == s.task) {
            Some((_, pts)) => pts.push(point),
            None => out.push((s.task.clone(), vec![point])),
        }
    }
    out
}

/// The y range covering every interval and zero, padded by a tenth.
fn y_range(all: &Series) -> (f64, f64) {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for (_, pts) in all {
        for &(_, m, h) in pts.iter().filter(|p| p.1.is_finite()) {
            lo = lo.min(m - h);
            hi = hi.max(m + h);
        }
    }
    let pad = ((hi - lo) * 0.1).max(0.01);
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(area: DrawingArea<DB, Shift>, panels: &[Panel]) -> anyhow::Result<()> {
    area.fill(&WHITE).map_err(fail)?;
    let last = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.0)))
        .fold(0.0f64, f64::max);
    let areas = area.split_evenly((1, panels.len()));
    for (panel, p) in areas.iter().zip(panels) {
        let all = &p.series;
        let (lo, hi) = y_range(all);
        let mut chart = ChartBuilder::on(panel)
            .caption(&p.title, ("sans-serif", 17))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.4..last + 0.4, lo..hi)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc(p.x_desc)
            .y_desc("accuracy gain")
            .x_labels(last as usize + 2)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                // Round first, so that a tick a hair below zero is not written "-0.00".
                let r = (y * 100.0).round() / 100.0;
                if r == 0.0 {
                    "0.00".into()
                } else {
                    format!("{r:+.2}")
                }
            })
            .draw()
            .map_err(fail)?;
        chart
            .draw_series(LineSeries::new(
                [(-0.4, 0.0), (last + 0.4, 0.0)],
                BLACK.mix(0.5),
            ))
            .map_err(fail)?;
        let n = all.len() as f64;
        for (k, (task, pts)) in all.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            // Side by side so that intervals of different tasks do not hide each other.
            let dx = (k as f64 - (n - 1.0) / 2.0) * 0.08;
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|&(i, m, _)| (i + dx, m)),
                    color.stroke_width(2),
                ))
                .map_err(fail)?
                .label(task.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&(i, m, h)| {
                    ErrorBar::new_vertical(i + dx, m - h, m, m + h, color.filled(), 8)
                }))
                .map_err(fail)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(fail)?;
    }
    area.present().map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::test_scores;

    #[test]
    fn plot_is_written_as_png_and_svg_with_one_series_per_task() {
        let all = vec![
            test_scores("polarity", 0, &[0.5, 0.6, 0.55], &[0.7, 0.7, 0.72]),
            test_scores("polarity", 1, &[0.6, 0.65, 0.6], &[0.71, 0.69, 0.75]),
            test_scores("bbc-news", 0, &[0.9, 0.88, 0.91], &[0.95, 0.94, 0.96]),
            test_scores("bbc-news", 1, &[0.92, 0.9, 0.9], &[0.96, 0.95, 0.95]),
        ];
        let probe = series(&all, true);
        assert_eq!(probe.len(), 2);
        assert_eq!(probe[0].0, "polarity");
        assert_eq!(
            probe[0].1[0],
            (0.0, 0.0, 0.0),
            "base 0 gains nothing on itself"
        );
        assert!((probe[0].1[1].1 - 0.0666).abs() < 1e-3);
        let (lo, hi) = y_range(&probe);
        assert!(lo < 0.0 && hi > probe[0].1[1].1 + probe[0].1[1].2);

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &all, &Vec::new()).unwrap();
        let png = std::fs::read(dir.path().join("gains.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = std::fs::read_to_string(dir.path().join("gains.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in [
            "polarity",
            "bbc-news",
            "few-shot fine-tune",
            "accuracy gain",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        assert!(
            !svg.contains("contributing sites"),
            "no site panel without site gains"
        );
        let sites = vec![(
            "sms-spam".to_string(),
            vec![(1.0, 0.02, 0.01), (2.0, 0.01, 0.01)],
        )];
        write(dir.path(), &all, &sites).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("gains.svg")).unwrap();
        assert!(svg.contains("gain at the contributing sites") && svg.contains("sms-spam"));
    }
}
