//! Pictures of a run: the settle latency over time (p50 and p99 of each quarter second) and its
//! distribution, side by side, as an SVG.

use plotters::prelude::*;
use std::path::Path;

/// Width of the time buckets on the left.
const BUCKET_S: f64 = 0.25;

/// Draws `timeline` (creation time in seconds after the first order, settle time in ms).
pub fn settle_latency(path: &Path, title: &str, timeline: &[(f64, f64)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("settle latency — {title}"), ("sans-serif", 20))?;
    let (over_time, distribution) = root.split_horizontally(760);
    if timeline.is_empty() {
        root.present()?;
        return Ok(());
    }
    let end = timeline.last().map_or(1.0, |t| t.0).max(BUCKET_S);
    let mut sorted: Vec<f64> = timeline.iter().map(|t| t.1).collect();
    sorted.sort_by(f64::total_cmp);
    let ceiling = quantile(&sorted, 0.999).max(1.0) * 1.1;

    // Left: p50 and p99 of each bucket.
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); (end / BUCKET_S) as usize + 1];
    for &(at, ms) in timeline {
        buckets[(at / BUCKET_S) as usize].push(ms);
    }
    for bucket in &mut buckets {
        bucket.sort_by(f64::total_cmp);
    }
    let series = |q: f64| -> Vec<(f64, f64)> {
        buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(i, b)| (i as f64 * BUCKET_S, quantile(b, q)))
            .collect()
    };
    let mut chart = ChartBuilder::on(&over_time)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..ceiling)?;
    chart
        .configure_mesh()
        .x_desc("order created, s after the first")
        .y_desc("settle time, ms")
        .draw()?;
    for (q, color, label) in [(0.99, RED, "p99"), (0.5, BLUE, "p50")] {
        chart
            .draw_series(LineSeries::new(series(q), color.stroke_width(2)))?
            .label(format!("{label} per {BUCKET_S} s"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    // Right: how many orders settled in each 1/40 of the range.
    const BINS: usize = 40;
    let width = ceiling / BINS as f64;
    let mut counts = [0u32; BINS];
    for &ms in &sorted {
        counts[((ms / width) as usize).min(BINS - 1)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut histogram = ChartBuilder::on(&distribution)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..ceiling, 0u32..most + most / 10)?;
    histogram
        .configure_mesh()
        .x_desc("settle time, ms")
        .y_desc("orders")
        .draw()?;
    histogram.draw_series(counts.iter().enumerate().map(|(i, &n)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width, n)], BLUE.mix(0.6).filled())
    }))?;
    root.present()?;
    Ok(())
}

/// The `q` quantile of sorted `values`.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(index).copied().unwrap_or(0.0)
}
