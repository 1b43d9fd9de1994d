//! Charts for the robustness report, drawn with plotters into SVG and PNG. Text uses a
//! bundled DejaVu Sans (no system font libraries).

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            panic!("the bundled DejaVuSans.ttf is a valid font");
        }
    });
}

/// One line of a chart.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// A line chart of recovery rates (y in 0..=100 %).
pub struct LineChart<'a> {
    /// Title.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// X range.
    pub x_range: (f64, f64),
    /// Y range.
    pub y_range: (f64, f64),
    /// The lines.
    pub series: Vec<Series>,
}

const SIZE: (u32, u32) = (800, 500);
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    c: &LineChart,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(c.x_range.0..c.x_range.1, c.y_range.0..c.y_range.1)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc(c.x_label)
        .y_desc(c.y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, s) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(3),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, colour.filled())))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// A chart drawable on any plotters backend.
pub trait Chart {
    /// Draws the chart on `root`.
    ///
    /// # Errors
    /// Drawing errors.
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static;
}

impl Chart for LineChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw_lines(root, self)
    }
}

impl Chart for NullChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw_null(root, self)
    }
}

/// Writes `stem.svg` and `stem.png` of a chart.
///
/// # Errors
/// Drawing or file errors.
pub fn render(stem: &Path, chart: &impl Chart) -> anyhow::Result<()> {
    register_font();
    chart.draw(SVGBackend::new(&stem.with_extension("svg"), SIZE).into_drawing_area())?;
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    chart.draw(BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area())?;
    save_png(&stem.with_extension("png"), buf)
}

fn save_png(path: &Path, rgb: Vec<u8>) -> anyhow::Result<()> {
    let r = tracemark::raster::Raster {
        width: SIZE.0 as usize,
        height: SIZE.1 as usize,
        channels: 3,
        samples: tracemark::raster::Samples::U8(rgb),
    };
    let opts = tracemark::io::image::WriteOptions {
        force: true,
        ..Default::default()
    };
    tracemark::io::image::write(&r, path, &opts)?;
    Ok(())
}

/// The null histogram: density of the per-image statistic against the model's density,
/// with the claim threshold marked.
pub struct NullChart<'a> {
    /// Per-image statistics.
    pub values: &'a [f64],
    /// Model CDF of the statistic.
    pub model_cdf: &'a dyn Fn(f64) -> f64,
    /// Claim threshold.
    pub threshold: f64,
}

fn draw_null<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    c: &NullChart,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (lo, hi, bin) = (3.5f64, 7.5f64, 0.1f64);
    let bins = ((hi - lo) / bin).round() as usize;
    let mut counts = vec![0usize; bins];
    for &v in c.values {
        let b = ((v - lo) / bin).floor();
        if b >= 0.0 && (b as usize) < bins {
            counts[b as usize] += 1;
        }
    }
    let n = c.values.len().max(1) as f64;
    let density: Vec<f64> = counts.iter().map(|&k| k as f64 / n / bin).collect();
    let model: Vec<(f64, f64)> = (0..=400)
        .map(|i| {
            let t = lo + (hi - lo) * i as f64 / 400.0;
            let h = 1e-3;
            (t, ((c.model_cdf)(t + h) - (c.model_cdf)(t - h)) / (2.0 * h))
        })
        .collect();
    let ymax = density
        .iter()
        .chain(model.iter().map(|p| &p.1))
        .cloned()
        .fold(0.0, f64::max)
        * 1.15;
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "False-claim study: {} detections without this key's mark",
                c.values.len()
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(lo..hi, 0.0..ymax)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("per-image statistic: max |z| over the whole search")
        .y_desc("density")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(density.iter().enumerate().map(|(i, &d)| {
            let x0 = lo + i as f64 * bin;
            Rectangle::new([(x0, 0.0), (x0 + bin, d)], blue.mix(0.6).filled())
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .label("measured")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 6), (x + 20, y + 6)], blue.mix(0.6).filled())
        });
    chart
        .draw_series(LineSeries::new(model, RED.stroke_width(3)))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .label("model: every shift an independent N(0,1)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], RED.stroke_width(3)));
    let t = c.threshold;
    chart
        .draw_series(LineSeries::new(
            vec![(t, 0.0), (t, ymax)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .label(format!("claim threshold (p = 1e-6): z = {t:.2}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}
