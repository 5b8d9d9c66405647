//! The plots of a run (SVG, drawn by `plotters`) and `report.html`, self-contained: the SVGs are
//! inline, next to a summary table. Also the side-by-side page of `experiment compare`.
//!
//! Figures (their `id` in the HTML and their file name, `<id>.svg`):
//! `acceptance` (acceptance ratio so far, per provider/algorithm), `setup-latency` (CDF of
//! create-to-accepted and accepted-to-ready, or of the solve time offline), `utilisation`
//! (reserved CPU and bandwidth per substrate link over time), `vns-alive`, and `throughput`
//! (iperf3 against the reservation; only when the run measured some).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use super::records::{Record, Run, Sample};

/// One figure: its id (file name without `.svg`), caption and SVG text.
#[derive(Debug, Clone)]
pub struct Figure {
    pub id: &'static str,
    pub caption: String,
    pub svg: String,
}

/// Ten distinct colours (the tab10 palette), picked in order.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const SIZE: (u32, u32) = (640, 360);

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e:?}")
}

/// The legend of `chart`'s labelled series at `position`, on a translucent white box.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(plot_err)
}

/// A tick label: no decimals for whole numbers, else as few as show the value.
fn tick(v: &f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if (v * 10.0).fract().abs() < 1e-6 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Axis range with some room, never empty.
fn span(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return lo.min(0.0)..lo.max(0.0) + 1.0;
    }
    lo..hi + (hi - lo) * 0.05
}

/// What a line chart shows.
pub struct Lines<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// Fixed y range, else from the data.
    pub y: Option<(f64, f64)>,
    /// Steps (a cumulative series) instead of straight segments.
    pub steps: bool,
    /// Where the legend goes (where the data leave room).
    pub legend: SeriesLabelPosition,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn stepped(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * 2);
    for (i, p) in pts.iter().enumerate() {
        if i > 0 {
            out.push((p.0, pts[i - 1].1));
        }
        out.push(*p);
    }
    out
}

/// A line chart with a legend.
pub fn line_chart(c: &Lines<'_>) -> anyhow::Result<String> {
    let pts = c.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (y0, y1) = c.y.unwrap_or((y0.min(0.0), y1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(span(x0.min(0.0), x1), span(y0, y1))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(c.x_desc)
            .y_desc(c.y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for (i, (name, p)) in c.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let p = if c.steps { stepped(p) } else { p.clone() };
            chart
                .draw_series(LineSeries::new(p, colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        if !c.series.is_empty() {
            draw_legend(&mut chart, c.legend.clone())?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Measured against reserved throughput, with the line measured = reserved.
pub fn throughput_chart(points: &[(f64, f64)]) -> anyhow::Result<String> {
    let top = points.iter().fold(1.0f64, |m, &(r, t)| m.max(r).max(t)) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput vs reservation (iperf3)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..top, 0f64..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("reserved Mbit/s")
            .y_desc("measured Mbit/s")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new(vec![(0.0, 0.0), (top, top)], grey))
            .map_err(plot_err)?
            .label("measured = reserved")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
        let blue = COLOURS[0];
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(r, t)| Circle::new((r, t), 4, blue.filled())),
            )
            .map_err(plot_err)?
            .label("one VN link")
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, blue.filled()));
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Substrate links drawn in the utilisation plot: the busiest by peak, so the legend stays
/// readable on a large substrate.
const MAX_LINKS_DRAWN: usize = 8;

fn utilisation_series(run: &Run) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out = Vec::new();
    for (algo, samples) in by_algorithm(run) {
        let tag = if algo.is_empty() {
            " (all hosts)".to_owned()
        } else {
            format!(" {algo}")
        };
        out.push((
            format!("CPU{tag}"),
            samples.iter().map(|s| (s.t_s, s.cpu_pct)).collect(),
        ));
        let mut peak: BTreeMap<&String, f64> = BTreeMap::new();
        for s in &samples {
            for (l, v) in &s.link_pct {
                let p = peak.entry(l).or_insert(0.0);
                *p = p.max(*v);
            }
        }
        let mut links: Vec<(&String, f64)> = peak.into_iter().collect();
        links.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        for (l, _) in links.into_iter().take(MAX_LINKS_DRAWN) {
            let pts = samples
                .iter()
                .filter_map(|s| s.link_pct.get(l).map(|v| (s.t_s, *v)))
                .collect();
            let tag = if algo.is_empty() {
                String::new()
            } else {
                format!(" {algo}")
            };
            out.push((format!("bandwidth {l}{tag}"), pts));
        }
    }
    out
}

/// The samples per algorithm (one group with an empty name for a live run).
fn by_algorithm(run: &Run) -> BTreeMap<&str, Vec<&Sample>> {
    let mut m: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in &run.samples {
        m.entry(s.algorithm.as_str()).or_default().push(s);
    }
    m
}

fn alive_series(run: &Run) -> Vec<(String, Vec<(f64, f64)>)> {
    by_algorithm(run)
        .into_iter()
        .map(|(algo, ss)| {
            let name = if algo.is_empty() {
                "VNs alive".to_owned()
            } else {
                algo.to_owned()
            };
            (
                name,
                ss.iter().map(|s| (s.t_s, s.vns_alive as f64)).collect(),
            )
        })
        .collect()
}

/// Whether a run is offline (`vnctl sim`): time is the trace's, latency is the solve time.
fn offline(run: &Run) -> bool {
    run.name.starts_with("sim")
}

/// Every figure of a run.
pub fn figures(run: &Run) -> anyhow::Result<Vec<Figure>> {
    let x = if offline(run) {
        "time (trace units)"
    } else {
        "seconds since start"
    };
    let mut out = Vec::new();
    let acceptance = run.acceptance_series().into_iter().collect();
    out.push(Figure {
        id: "acceptance",
        caption: "Acceptance ratio so far, per provider/algorithm".into(),
        svg: line_chart(&Lines {
            title: "Acceptance over time",
            x_desc: x,
            y_desc: "accepted / requested",
            y: Some((0.0, 1.0)),
            steps: true,
            legend: SeriesLabelPosition::LowerRight,
            series: acceptance,
        })?,
    });
    let (title, caption) = if offline(run) {
        (
            "CDF of embedding time",
            "Solve time of the embedding per request (offline: no provisioning)",
        )
    } else {
        (
            "CDF of setup latency",
            "Create to Accepted (embedding and commit) and Accepted to READY (provisioning)",
        )
    };
    let latency = run
        .setup_cdfs()
        .into_iter()
        .map(|(k, v)| match k.strip_prefix("create-to-accepted ") {
            Some(algo) if offline(run) => (format!("solve time {algo}"), v),
            _ => (k, v),
        })
        .collect();
    out.push(Figure {
        id: "setup-latency",
        caption: caption.into(),
        svg: line_chart(&Lines {
            title,
            x_desc: "milliseconds",
            y_desc: "fraction of requests",
            y: Some((0.0, 1.0)),
            steps: true,
            legend: SeriesLabelPosition::LowerRight,
            series: latency,
        })?,
    });
    out.push(Figure {
        id: "utilisation",
        caption: "Reserved CPU over all hosts and reserved bandwidth per substrate link".into(),
        svg: line_chart(&Lines {
            title: "Substrate utilisation",
            x_desc: x,
            y_desc: "percent of capacity",
            y: Some((0.0, 100.0)),
            steps: false,
            legend: SeriesLabelPosition::UpperLeft,
            series: utilisation_series(run),
        })?,
    });
    out.push(Figure {
        id: "vns-alive",
        caption: "Virtual networks alive".into(),
        svg: line_chart(&Lines {
            title: "VNs alive",
            x_desc: x,
            y_desc: "VNs",
            y: None,
            steps: true,
            legend: SeriesLabelPosition::UpperLeft,
            series: alive_series(run),
        })?,
    });
    let tp = run.throughput_points();
    if !tp.is_empty() {
        out.push(Figure {
            id: "throughput",
            caption: "iperf3 (one TCP stream) on sampled links against their reservation".into(),
            svg: throughput_chart(&tp)?,
        });
    }
    Ok(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

/// The summary table: one row per provider/algorithm.
fn summary(run: &Run) -> String {
    let mut groups: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in &run.records {
        groups
            .entry((r.provider.clone(), r.algorithm.clone()))
            .or_default()
            .push(r);
    }
    let mut t = String::from(
        "<table><tr><th>provider</th><th>algorithm</th><th>requests</th><th>accepted</th>\
         <th>acceptance</th><th>median create-to-accepted ms</th>\
         <th>median accepted-to-ready ms</th><th>links reachable</th>\
         <th>median measured / reserved</th></tr>\n",
    );
    for ((p, a), rs) in groups {
        let acc = rs.iter().filter(|r| r.accepted).count();
        let probed: usize = rs.iter().map(|r| r.links_probed).sum();
        let reach: usize = rs.iter().map(|r| r.links_reachable).sum();
        let ratio = median(
            rs.iter()
                .filter_map(|r| Some(r.measured_mbps? / r.reserved_mbps?))
                .collect(),
        );
        let _ = writeln!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{acc}</td><td>{:.3}</td><td>{}</td>\
             <td>{}</td><td>{reach}/{probed}</td><td>{}</td></tr>",
            esc(&p),
            esc(&a),
            rs.len(),
            acc as f64 / rs.len().max(1) as f64,
            ms(median(
                rs.iter().filter_map(|r| r.create_to_accepted_ms).collect()
            )),
            ms(median(
                rs.iter().filter_map(|r| r.accepted_to_ready_ms).collect()
            )),
            ratio.map_or("-".into(), |x| format!("{x:.2}")),
        );
    }
    t.push_str("</table>\n");
    t
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;\
text-align:right}th{background:#f4f4f4}figure{display:inline-block;margin:0.5em}\
figcaption{font-size:90%;color:#555;max-width:640px}.pair{display:flex;gap:1em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{STYLE}</style></head>\n<body><h1>{t}</h1>\n{body}</body></html>\n",
        t = esc(title)
    )
}

fn figure_html(f: &Figure, id_suffix: &str) -> String {
    format!(
        "<figure id=\"{}{id_suffix}\">{}<figcaption>{}</figcaption></figure>\n",
        f.id,
        f.svg,
        esc(&f.caption)
    )
}

/// Writes `report.html` and one `<id>.svg` per figure into `dir`.
pub fn write_report(run: &Run, dir: &Path) -> anyhow::Result<()> {
    let figs = figures(run)?;
    let mut body = format!(
        "<p>{} requests, run {}. Data: <a href=\"requests.csv\">requests.csv</a>, \
         <a href=\"timeline.csv\">timeline.csv</a>, <a href=\"run.json\">run.json</a>.</p>\n",
        run.records.len(),
        esc(&run.ended)
    );
    body.push_str(&summary(run));
    if !figs.iter().any(|f| f.id == "throughput") {
        body.push_str("<p>No throughput plot: this run measured no link with iperf3.</p>\n");
    }
    for f in &figs {
        body.push_str(&figure_html(f, ""));
        let p = dir.join(format!("{}.svg", f.id));
        std::fs::write(&p, &f.svg).with_context(|| format!("writing {}", p.display()))?;
    }
    let p = dir.join("report.html");
    std::fs::write(&p, page(&format!("Experiment {}", run.name), &body))
        .with_context(|| format!("writing {}", p.display()))
}

/// `compare.html`: the figures of two runs side by side, with both summaries.
pub fn compare_html(a: (&str, &Run), b: (&str, &Run)) -> anyhow::Result<String> {
    let (fa, fb) = (figures(a.1)?, figures(b.1)?);
    let mut body = String::new();
    for (label, run) in [a, b] {
        let _ = writeln!(body, "<h2>{}</h2>", esc(label));
        body.push_str(&summary(run));
    }
    let ids: Vec<&'static str> =
        fa.iter()
            .map(|f| f.id)
            .chain(fb.iter().map(|f| f.id))
            .fold(Vec::new(), |mut v, id| {
                if !v.contains(&id) {
                    v.push(id);
                }
                v
            });
    for id in ids {
        body.push_str("<div class=\"pair\">\n");
        for (suffix, figs, label) in [("-a", &fa, a.0), ("-b", &fb, b.0)] {
            match figs.iter().find(|f| f.id == id) {
                Some(f) => {
                    let mut f = f.clone();
                    f.caption = format!("{label}: {}", f.caption);
                    body.push_str(&figure_html(&f, suffix));
                }
                None => {
                    let _ = writeln!(body, "<p>{}: no {id} data</p>", esc(label));
                }
            }
        }
        body.push_str("</div>\n");
    }
    Ok(page(&format!("{} vs {}", a.0, b.0), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample_run() -> Run {
        let records = (0..20)
            .map(|i| Record {
                seq: i,
                provider: if i % 2 == 0 { "red" } else { "blue" }.into(),
                algorithm: "lace".into(),
                arrival_s: i as f64,
                accepted: i % 3 != 0,
                create_to_accepted_ms: Some(5.0 + i as f64),
                accepted_to_ready_ms: (i % 3 != 0).then_some(300.0 + 10.0 * i as f64),
                reserved_mbps: (i % 3 != 0).then_some(10.0),
                measured_mbps: (i % 3 != 0).then_some(9.5),
                ..Default::default()
            })
            .collect();
        let samples = (0..10)
            .map(|i| Sample {
                t_s: 2.0 * i as f64,
                vns_alive: i,
                cpu_pct: 5.0 * i as f64,
                link_pct: [("h1-h2".to_string(), 3.0 * i as f64)].into(),
                ..Default::default()
            })
            .collect();
        Run {
            name: "t".into(),
            ended: "completed".into(),
            records,
            samples,
        }
    }

    #[test]
    fn report_has_every_plot_inline_and_as_files() {
        let run = sample_run();
        let dir = tempfile::tempdir().unwrap();
        write_report(&run, dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        for id in [
            "acceptance",
            "setup-latency",
            "utilisation",
            "vns-alive",
            "throughput",
        ] {
            assert!(html.contains(&format!("<figure id=\"{id}\"><svg")), "{id}");
            let svg = std::fs::read_to_string(dir.path().join(format!("{id}.svg"))).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("<polyline") || svg.contains("<circle")
            );
        }
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.contains("red/lace") && html.contains("bandwidth h1-h2"));
        // red: 10 requests, i = 0, 6, 12, 18 rejected.
        assert!(html.contains("<td>red</td><td>lace</td><td>10</td><td>6</td><td>0.600</td>"));
    }

    #[test]
    fn compare_puts_runs_side_by_side() {
        let a = sample_run();
        let mut b = sample_run();
        b.records.iter_mut().for_each(|r| r.measured_mbps = None);
        let html = compare_html(("one", &a), ("two", &b)).unwrap();
        assert!(html.contains("id=\"acceptance-a\"") && html.contains("id=\"acceptance-b\""));
        assert!(html.contains("id=\"throughput-a\"") && html.contains("two: no throughput data"));
        assert_eq!(html.matches("<svg").count(), 9);
    }
}
