//! A benchmark's results: a human summary and one JSON object.

use std::fmt::Write as _;
use std::time::Instant;

use crate::sys;

/// One result value.
#[derive(Clone, Debug)]
enum Value {
    Int(u64),
    Float(f64),
    Bool(bool),
    Text(String),
}

/// Results in the order they were recorded.
#[derive(Debug)]
pub struct Report {
    /// Everything went as it should (all delivered, in order).
    pub ok: bool,
    /// Named results, for the JSON object.
    fields: Vec<(&'static str, Value)>,
    /// Lines of the human summary.
    lines: Vec<String>,
}

impl Report {
    /// An empty report for `case`.
    pub fn new(case: &str) -> Self {
        Report {
            ok: true,
            fields: vec![("case", Value::Text(case.to_string()))],
            lines: Vec::new(),
        }
    }

    /// Records an integer.
    pub fn int(&mut self, key: &'static str, value: u64) {
        self.fields.push((key, Value::Int(value)));
    }

    /// Records a number.
    pub fn float(&mut self, key: &'static str, value: f64) {
        self.fields.push((key, Value::Float(value)));
    }

    /// Records a flag.
    pub fn flag(&mut self, key: &'static str, value: bool) {
        self.fields.push((key, Value::Bool(value)));
    }

    /// Adds a line to the human summary.
    pub fn line(&mut self, text: String) {
        self.lines.push(text);
    }

    /// The human summary.
    pub fn human(&self) -> String {
        self.lines.join("\n")
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{key}\":");
            match value {
                Value::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Float(x) if x.is_finite() => {
                    let _ = write!(out, "{x:.6}");
                }
                Value::Float(_) => out.push_str("null"),
                Value::Bool(b) => {
                    let _ = write!(out, "{b}");
                }
                Value::Text(t) => crate::json::push_string(&mut out, t.as_bytes()),
            }
        }
        out.push('}');
        out
    }
}

/// CPU used by the generator and the server over a measured interval.
pub struct Usage {
    server: Option<u32>,
    started: Instant,
    bench_cpu: f64,
    server_cpu: Option<f64>,
}

impl Usage {
    /// Starts measuring (the server's too, when its pid is known).
    pub fn start(server: Option<u32>) -> Self {
        Usage {
            server,
            started: Instant::now(),
            bench_cpu: sys::cpu_seconds(std::process::id()).unwrap_or(0.0),
            server_cpu: server.and_then(sys::cpu_seconds),
        }
    }

    /// Adds CPU seconds (and the server's RSS) to `report`.
    pub fn finish(&self, report: &mut Report) {
        let wall = self.started.elapsed().as_secs_f64();
        let bench = sys::cpu_seconds(std::process::id()).unwrap_or(0.0) - self.bench_cpu;
        report.float("bench_cpu_s", bench);
        let mut line = format!("cpu: generator {bench:.2} s over {wall:.2} s wall");
        if let Some(pid) = self.server {
            if let (Some(before), Some(after)) = (self.server_cpu, sys::cpu_seconds(pid)) {
                report.float("server_cpu_s", after - before);
                let _ = write!(line, ", server {:.2} s", after - before);
            }
            if let Some(rss) = sys::rss_kib(pid) {
                report.int("server_rss_kib", rss);
                let _ = write!(line, ", server RSS {:.1} MiB", rss as f64 / 1024.0);
            }
        }
        report.line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_valid_object() {
        let mut report = Report::new("throughput");
        report.int("delivered", 10);
        report.float("msgs_per_s", 1.5);
        report.float("nan", f64::NAN);
        report.flag("complete", true);
        assert_eq!(
            report.json(),
            "{\"case\":\"throughput\",\"delivered\":10,\"msgs_per_s\":1.500000,\"nan\":null,\"complete\":true}"
        );
    }
}
