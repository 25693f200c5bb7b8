//! Progress of a campaign: a bar on a terminal, JSON lines otherwise (one per second at most,
//! and one at the end of each source), on standard error.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    style: Style,
    state: Mutex<State>,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A bar redrawn in place.
    Bar,
    /// One JSON object per line.
    Json,
    /// Nothing.
    Quiet,
}

#[derive(Debug)]
struct State {
    labels: Vec<String>,
    totals: Vec<u64>,
    done: Vec<u64>,
    bytes: Vec<u64>,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    /// Progress for sources with these labels and item counts (0 when unknown), in the style
    /// that suits standard error.
    pub fn new(labels: Vec<String>, totals: Vec<u64>) -> Progress {
        let style = if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Json
        };
        Self::with_style(labels, totals, style)
    }

    /// Progress in a given style.
    pub fn with_style(labels: Vec<String>, totals: Vec<u64>, style: Style) -> Progress {
        let n = labels.len();
        Progress {
            style,
            state: Mutex::new(State {
                labels,
                totals,
                done: vec![0; n],
                bytes: vec![0; n],
                started: Instant::now(),
                last: None,
            }),
        }
    }

    /// `items` more items (and `bytes`) of source `index` were handled.
    pub fn advance(&self, index: usize, items: u64, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if index >= s.done.len() {
            return;
        }
        s.done[index] += items;
        s.bytes[index] += bytes;
        let now = Instant::now();
        let due = s.last.is_none_or(|l| now - l >= self.interval());
        let finished = s.totals[index] > 0 && s.done[index] >= s.totals[index];
        if due || finished {
            s.last = Some(now);
            self.show(&s, index);
        }
    }

    /// Ends the bar's line.
    pub fn finish(&self) {
        if self.style == Style::Bar {
            eprintln!();
        }
    }

    fn interval(&self) -> Duration {
        match self.style {
            Style::Bar => Duration::from_millis(100),
            _ => Duration::from_secs(1),
        }
    }

    fn show(&self, s: &State, index: usize) {
        let elapsed = s.started.elapsed().as_secs_f64().max(1e-3);
        let done = s.done[index];
        let total = s.totals[index];
        let rate = done as f64 / elapsed;
        let eta = (total > done && rate > 0.0).then(|| (total - done) as f64 / rate);
        match self.style {
            Style::Quiet => {}
            Style::Json => {
                let line = serde_json::json!({
                    "source": index,
                    "label": s.labels[index],
                    "done": done,
                    "total": total,
                    "bytes": s.bytes[index],
                    "rate_per_s": (rate * 10.0).round() / 10.0,
                    "eta_s": eta.map(|e| e.round()),
                });
                eprintln!("{line}");
            }
            Style::Bar => {
                let width = 30usize;
                let filled = if total > 0 {
                    ((done.min(total) as f64 / total as f64) * width as f64) as usize
                } else {
                    0
                };
                let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
                let eta = eta.map_or(String::new(), |e| format!(" eta {e:.0}s"));
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r{} [{bar}] {done}/{total} {:.0}/s{eta}   ",
                    s.labels[index], rate
                );
                let _ = err.flush();
            }
        }
    }
}
