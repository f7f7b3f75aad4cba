//! A small Prometheus metrics registry: counters, gauges, histograms, with bounded label sets,
//! rendered in the text exposition format (version 0.0.4).
//!
//! Modules register their families once at start-up and keep the `Arc`s; updates are atomic
//! operations. A family with labels keeps at most [`MAX_SERIES`] label combinations; further
//! combinations are counted under the label value `other` so that a misbehaving peer cannot
//! grow memory through label cardinality (house rule 4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Most label combinations one family keeps.
pub const MAX_SERIES: usize = 256;

/// Latency buckets in seconds, for request and processing times.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution over fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microunits, so it can be an atomic integer.
    sum_micro: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micro = (v.max(0.0) * 1e6) as u64;
        self.sum_micro.fetch_add(micro, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A family of series of one kind, keyed by label values.
pub struct Family<T> {
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, Arc<T>>>,
    make: Box<dyn Fn() -> T + Send + Sync>,
}

impl<T> Family<T> {
    /// The series for these label values (created on first use; `other` past the cap).
    pub fn with(&self, values: &[&str]) -> Arc<T> {
        debug_assert_eq!(values.len(), self.labels.len());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        let key = if map.len() >= MAX_SERIES {
            vec!["other".to_owned(); self.labels.len()]
        } else {
            key
        };
        map.entry(key)
            .or_insert_with(|| Arc::new((self.make)()))
            .clone()
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<T>)> {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

type GaugeFn = Box<dyn Fn() -> f64 + Send + Sync>;

enum Entry {
    Counter(Arc<Family<Counter>>),
    Gauge(Arc<Family<Gauge>>),
    Histogram(Arc<Family<Histogram>>),
    GaugeFn(GaugeFn),
    Info(Vec<(&'static str, String)>),
}

struct Described {
    name: &'static str,
    help: &'static str,
    entry: Entry,
}

/// A set of metric families.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<Vec<Described>>,
}

impl Registry {
    fn push(&self, name: &'static str, help: &'static str, entry: Entry) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Registering twice (a second `App` in one test process) replaces the first.
        e.retain(|d| d.name != name);
        e.push(Described { name, help, entry });
    }

    fn family<T: Send + Sync + 'static>(
        labels: &'static [&'static str],
        make: impl Fn() -> T + Send + Sync + 'static,
    ) -> Arc<Family<T>> {
        Arc::new(Family {
            labels,
            series: Mutex::new(BTreeMap::new()),
            make: Box::new(make),
        })
    }

    /// Registers a counter family.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Arc<Family<Counter>> {
        let f = Self::family(labels, Counter::default);
        self.push(name, help, Entry::Counter(f.clone()));
        f
    }

    /// Registers a gauge family.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Arc<Family<Gauge>> {
        let f = Self::family(labels, Gauge::default);
        self.push(name, help, Entry::Gauge(f.clone()));
        f
    }

    /// Registers a histogram family.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Arc<Family<Histogram>> {
        let f = Self::family(labels, move || Histogram::new(bounds));
        self.push(name, help, Entry::Histogram(f.clone()));
        f
    }

    /// Registers a gauge computed when scraped (uptime, database size).
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.push(name, help, Entry::GaugeFn(Box::new(f)));
    }

    /// Registers an info metric: a constant 1 with descriptive labels (build info).
    pub fn info(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Vec<(&'static str, String)>,
    ) {
        self.push(name, help, Entry::Info(labels));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for d in entries.iter() {
            let kind = match d.entry {
                Entry::Counter(_) => "counter",
                Entry::Histogram(_) => "histogram",
                Entry::Gauge(_) | Entry::GaugeFn(_) | Entry::Info(_) => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", d.name, d.help);
            let _ = writeln!(out, "# TYPE {} {kind}", d.name);
            match &d.entry {
                Entry::Counter(f) => {
                    for (vals, c) in f.snapshot() {
                        let l = labels(f.labels, &vals, None);
                        let _ = writeln!(out, "{}{l} {}", d.name, c.get());
                    }
                }
                Entry::Gauge(f) => {
                    for (vals, g) in f.snapshot() {
                        let l = labels(f.labels, &vals, None);
                        let _ = writeln!(out, "{}{l} {}", d.name, g.get());
                    }
                }
                Entry::Histogram(f) => {
                    for (vals, h) in f.snapshot() {
                        for (b, c) in h.bounds.iter().zip(&h.counts) {
                            let l = labels(f.labels, &vals, Some(&b.to_string()));
                            let _ =
                                writeln!(out, "{}_bucket{l} {}", d.name, c.load(Ordering::Relaxed));
                        }
                        let l = labels(f.labels, &vals, Some("+Inf"));
                        let _ = writeln!(out, "{}_bucket{l} {}", d.name, h.count());
                        let l = labels(f.labels, &vals, None);
                        let sum = h.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
                        let _ = writeln!(out, "{}_sum{l} {sum}", d.name);
                        let _ = writeln!(out, "{}_count{l} {}", d.name, h.count());
                    }
                }
                Entry::GaugeFn(f) => {
                    let _ = writeln!(out, "{} {}", d.name, f());
                }
                Entry::Info(kv) => {
                    let names: Vec<&str> = kv.iter().map(|(k, _)| *k).collect();
                    let vals: Vec<String> = kv.iter().map(|(_, v)| v.clone()).collect();
                    let _ = writeln!(out, "{}{} 1", d.name, labels(&names, &vals, None));
                }
            }
        }
        out
    }
}

fn labels(names: &[&str], values: &[String], le: Option<&str>) -> String {
    if names.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process-wide registry that `/metrics` renders.
pub fn global() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let c = r.counter("x_requests_total", "Requests.", &["route", "status"]);
        c.with(&["/healthz", "200"]).add(3);
        c.with(&["a\"b", "500"]).inc();
        let h = r.histogram("x_seconds", "Latency.", &[], &[0.1, 1.0]);
        h.with(&[]).observe(0.05);
        h.with(&[]).observe(0.5);
        r.gauge_fn("x_up", "Up.", || 1.0);
        r.info("x_build_info", "Build.", vec![("version", "1.2.3".into())]);
        let text = r.render();
        assert!(
            text.contains("x_requests_total{route=\"/healthz\",status=\"200\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_requests_total{route=\"a\\\"b\",status=\"500\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_count 2\n"), "{text}");
        assert!(text.contains("# TYPE x_seconds histogram\n"), "{text}");
        assert!(text.contains("x_up 1\n") && text.contains("x_build_info{version=\"1.2.3\"} 1\n"));
    }

    #[test]
    fn label_cardinality_is_capped() {
        let r = Registry::default();
        let c = r.counter("y_total", "Y.", &["k"]);
        for i in 0..(MAX_SERIES + 50) {
            c.with(&[&i.to_string()]).inc();
        }
        let text = r.render();
        let series = text.lines().filter(|l| l.starts_with("y_total{")).count();
        assert_eq!(series, MAX_SERIES + 1);
        assert!(text.contains("y_total{k=\"other\"} 50\n"), "{text}");
    }
}
