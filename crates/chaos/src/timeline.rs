//! A run's picture, as Jepsen draws latency: above, orders acknowledged and settled (left `NEW`)
//! per second; below, the settle latency (p50 and p99 of the orders created in each second); each
//! fault's window shaded and labelled on both. Drawn from the recorded history and the orders
//! database (an order's history says when it left `NEW`). The same series say how long each
//! fault took to recover from.

use crate::{
    faults::Fault,
    history::{Entry, Operation, Outcome},
};
use gozon_loadgen::plot::quantile;
use plotters::prelude::*;
use sqlx::{Connection, PgConnection};
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

/// One fault's window, seconds since the run began.
struct Window {
    from: f64,
    to: f64,
    fault: Fault,
    label: String,
}

/// A run's series, per second since it began.
pub struct Timeline {
    end: f64,
    acknowledged_per_s: Vec<(f64, f64)>,
    settled_per_s: Vec<(f64, f64)>,
    p50: Vec<(f64, f64)>,
    p99: Vec<(f64, f64)>,
    faults: Vec<Window>,
}

/// Seconds from each fault's end until orders settle as they did without faults again, by kind.
pub type Recovery = BTreeMap<Fault, Vec<f64>>;

impl Timeline {
    /// The series of the run of `entries`, with when each order left `NEW` from its database.
    pub async fn load(entries: &[Entry], orders_database_url: &str) -> anyhow::Result<Self> {
        let began_unix_ms = entries
            .iter()
            .find_map(|entry| match entry {
                Entry::Began { unix_ms, .. } => Some(*unix_ms),
                _ => None,
            })
            .unwrap_or(0.0);
        let mut db = PgConnection::connect(orders_database_url).await?;
        // Seconds since the run began: when each order was created, and when it left NEW — paid,
        // declined, cancelled or timed out (its first such event; not a refund much later, which
        // would make a later cancel look like a slow payment).
        let orders: Vec<(f64, f64)> = sqlx::query_as(
            "SELECT extract(epoch FROM o.created_at) * 1000 - $1, \
                extract(epoch FROM COALESCE(min(e.at), o.updated_at)) * 1000 - $1 \
         FROM orders o LEFT JOIN order_events e ON e.order_id = o.id \
           AND e.event IN ('paid', 'declined', 'cancel_requested', 'deadline_passed') \
         WHERE o.status <> 'NEW' GROUP BY o.id",
        )
        .bind(began_unix_ms)
        .fetch_all(&mut db)
        .await?;
        let orders: Vec<(f64, f64)> = orders
            .into_iter()
            .map(|(created, updated)| (created / 1e3, updated / 1e3))
            .collect();

        let mut invoked: HashMap<u64, Operation> = HashMap::new();
        let mut acknowledged = Vec::new();
        let mut faults = Vec::new();
        let mut open: HashMap<Fault, (f64, String)> = HashMap::new();
        for entry in entries {
            match entry {
                Entry::Invoke { op, operation, .. } => {
                    invoked.insert(*op, *operation);
                }
                Entry::Complete {
                    op, at_ms, outcome, ..
                } if *outcome == Outcome::Ok && invoked.get(op) == Some(&Operation::Order) => {
                    acknowledged.push(at_ms / 1e3);
                }
                Entry::FaultBegan {
                    at_ms,
                    fault,
                    target,
                } => {
                    open.insert(
                        *fault,
                        (at_ms / 1e3, format!("{} ({target})", fault.short())),
                    );
                }
                Entry::FaultEnded { at_ms, fault } => {
                    if let Some((from, label)) = open.remove(fault) {
                        faults.push(Window {
                            from,
                            to: at_ms / 1e3,
                            fault: *fault,
                            label,
                        });
                    }
                }
                _ => {}
            }
        }

        let end = orders
            .iter()
            .map(|o| o.1)
            .chain(acknowledged.iter().copied())
            .fold(1.0_f64, f64::max)
            .ceil();
        let seconds = end as usize + 1;
        let per_second = |times: &mut dyn Iterator<Item = f64>| {
            let mut counts = vec![0u32; seconds];
            for at in times {
                if at >= 0.0 && (at as usize) < seconds {
                    counts[at as usize] += 1;
                }
            }
            counts
                .into_iter()
                .enumerate()
                .map(|(s, n)| (s as f64 + 0.5, f64::from(n)))
                .collect::<Vec<_>>()
        };
        let acknowledged_per_s = per_second(&mut acknowledged.iter().copied());
        let settled_per_s = per_second(&mut orders.iter().map(|o| o.1));
        let mut latency: Vec<Vec<f64>> = vec![Vec::new(); seconds];
        for &(created, updated) in &orders {
            if created >= 0.0 && (created as usize) < seconds {
                latency[created as usize].push((updated - created) * 1e3);
            }
        }
        for bucket in &mut latency {
            bucket.sort_by(f64::total_cmp);
        }
        let quantile_series = |q: f64| -> Vec<(f64, f64)> {
            latency
                .iter()
                .enumerate()
                .filter(|(_, b)| !b.is_empty())
                .map(|(s, b)| (s as f64 + 0.5, quantile(b, q)))
                .collect()
        };
        Ok(Self {
            end,
            acknowledged_per_s,
            settled_per_s,
            p50: quantile_series(0.5),
            p99: quantile_series(0.99),
            faults,
        })
    }

    /// For each fault, how long it took the system to recover: the seconds from the fault's
    /// beginning until the orders created in each second settle with a p99 within three times the
    /// run's fault-free p99 (the median over the seconds outside every fault window, at least
    /// 1 s) and keep doing so until the next fault begins; 0 if settling never slowed that much.
    pub fn recovery(&self) -> Recovery {
        let mut sorted: Vec<f64> = self
            .p99
            .iter()
            .filter(|(s, _)| !self.faults.iter().any(|w| *s >= w.from && *s <= w.to + 1.0))
            .map(|p| p.1)
            .collect();
        sorted.sort_by(f64::total_cmp);
        let bound = (3.0 * quantile(&sorted, 0.5)).max(1000.0);
        let mut recovery = Recovery::new();
        for window in &self.faults {
            let next = self
                .faults
                .iter()
                .map(|w| w.from)
                .filter(|&from| from > window.from)
                .fold(self.end, f64::min);
            let last_slow = self
                .p99
                .iter()
                .filter(|(s, ms)| *s >= window.from && *s < next && *ms > bound)
                .map(|(s, _)| s + 0.5)
                .fold(window.from, f64::max);
            recovery
                .entry(window.fault)
                .or_default()
                .push(last_slow - window.from);
        }
        recovery
    }

    /// Draws the run to `path` (SVG).
    pub fn draw(&self, path: &Path, title: &str) -> anyhow::Result<()> {
        let Self {
            end,
            acknowledged_per_s,
            settled_per_s,
            p50,
            p99,
            faults,
        } = self;
        let end = *end;
        let root = SVGBackend::new(path, (1400, 760)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&format!("GoZon under faults — {title}"), ("sans-serif", 20))?;
        let (upper, lower) = root.split_vertically(360);

        let most = acknowledged_per_s
            .iter()
            .chain(settled_per_s)
            .map(|p| p.1)
            .fold(1.0, f64::max)
            * 1.15;
        let mut rates = ChartBuilder::on(&upper)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..most)?;
        rates.configure_mesh().y_desc("orders per second").draw()?;
        shade(&mut rates, faults, most, true)?;
        for (series, color, label) in [
            (&acknowledged_per_s, BLUE, "acknowledged (201)"),
            (&settled_per_s, GREEN, "settled (final)"),
        ] {
            rates
                .draw_series(LineSeries::new(
                    series.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        rates
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;

        let ceiling = p99.iter().map(|p| p.1).fold(10.0, f64::max) * 1.15;
        let mut settle = ChartBuilder::on(&lower)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, (1.0..ceiling).log_scale())?;
        settle
            .configure_mesh()
            .x_desc("seconds since the run began")
            .y_desc("settle time, ms (log)")
            .draw()?;
        shade(&mut settle, faults, ceiling, false)?;
        for (series, color, label) in [(&p99, RED, "p99"), (&p50, BLUE, "p50")] {
            settle
                .draw_series(LineSeries::new(
                    series.iter().map(|&(s, ms)| (s, ms.max(1.0))),
                    color.stroke_width(2),
                ))?
                .label(format!("{label} of the orders created in each second"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        settle
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// Shades each fault's window up to `top`, labelled when `labels`.
fn shade<DB: DrawingBackend, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    faults: &[Window],
    top: f64,
    labels: bool,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    let bottom = chart.y_range().start.max(f64::MIN_POSITIVE);
    chart
        .draw_series(faults.iter().map(|window| {
            Rectangle::new(
                [
                    (window.from, bottom),
                    (window.to.max(window.from + 0.2), top),
                ],
                RGBColor(230, 90, 60).mix(0.18).filled(),
            )
        }))
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    if labels {
        chart
            .draw_series(faults.iter().enumerate().map(|(n, window)| {
                // Staggered, so that neighbours do not overlap.
                let height = top * (0.96 - 0.07 * (n % 4) as f64);
                Text::new(
                    window.label.clone(),
                    (window.from, height),
                    ("sans-serif", 11).into_font(),
                )
            }))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    Ok(())
}
