//! A grouped bar chart of the evaluation table, as PNG.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::MethodReport;

/// TrueType fonts tried, in order, for the chart's text (Debian's fonts-dejavu-core first).
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Draws nDCG@10, recall@10, recall@100 and MRR@10 per method. Returns an error message
/// when no font is found or drawing fails; the caller reports it and keeps the table.
pub fn draw(path: &Path, title: &str, methods: &[MethodReport]) -> Result<(), String> {
    let font = FONT_PATHS.iter().find_map(|candidate| std::fs::read(candidate).ok()).ok_or_else(|| {
        format!("no TrueType font found (looked in {}); install fonts-dejavu-core", FONT_PATHS.join(", "))
    })?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, font).map_err(|_| "the font file is not a valid TrueType font".to_string())?;

    let metrics: [(&str, fn(&MethodReport) -> f64); 4] = [
        ("nDCG@10", |m| m.ndcg_at_10),
        ("recall@10", |m| m.recall_at_10),
        ("recall@100", |m| m.recall_at_100),
        ("MRR@10", |m| m.mrr_at_10),
    ];
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| err.to_string())?;
    let groups = metrics.len();
    let per_group = methods.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..groups as f64, 0f64..1f64)
        .map_err(|err| err.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Ticks every half unit; only those at group centres (x.5) carry the metric's name.
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&|x| {
            let centred = (x.fract() - 0.5).abs() < 0.01;
            metrics.get(x.floor() as usize).filter(|_| centred).map(|(name, _)| name.to_string()).unwrap_or_default()
        })
        .y_desc("score")
        .draw()
        .map_err(|err| err.to_string())?;

    for (method_index, method) in methods.iter().enumerate() {
        let color = Palette99::pick(method_index).filled();
        let width = 0.8 / per_group as f64;
        let bars = metrics.iter().enumerate().map(|(group, (_, value))| {
            let left = group as f64 + 0.1 + method_index as f64 * width;
            Rectangle::new([(left, 0.0), (left + width * 0.9, value(method))], color)
        });
        chart
            .draw_series(bars)
            .map_err(|err| err.to_string())?
            .label(method.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], Palette99::pick(method_index).filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|err| err.to_string())?;
    root.present().map_err(|err| err.to_string())
}
