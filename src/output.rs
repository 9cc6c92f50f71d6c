//! What the operator commands print: aligned tables for people, one JSON document for
//! scripts, and whether to colour either. Shared by every listing (`key list`,
//! `token list`, `audit`, and any list added later) so they all read alike.

pub mod audit;
pub mod keys;
pub mod plans;

use anstyle::{AnsiColor, Style};
use std::io::Write;
use unicode_width::UnicodeWidthStr;

/// Whether standard output should carry colour: on a terminal, unless `NO_COLOR` is set
/// (or `CLICOLOR=0`, or `TERM=dumb`); `CLICOLOR_FORCE=1` asks for it through a pipe.
/// anstream applies those conventions, so every command agrees on them.
pub fn stdout_color() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
}

/// What a cell's colour says, rather than the colour itself, so that every listing
/// marks the same state the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tone {
    #[default]
    Plain,
    /// Working as intended (an active key).
    Good,
    /// Needs a look (expired, or blocked until something changes).
    Warn,
    /// Removed or refused (a revoked token, a purged key).
    Bad,
    /// Secondary detail (ids, "-").
    Dim,
    /// Column headings.
    Heading,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Tone::Plain => Style::new(),
            Tone::Good => AnsiColor::Green.on_default(),
            Tone::Warn => AnsiColor::Yellow.on_default(),
            Tone::Bad => AnsiColor::Red.on_default(),
            Tone::Dim => Style::new().dimmed(),
            Tone::Heading => Style::new().bold(),
        }
    }
}

/// `text` in the colour of `tone` when `color` is on.
pub fn paint(text: &str, tone: Tone, color: bool) -> String {
    let style = tone.style();
    if !color || style == Style::new() {
        return text.to_owned();
    }
    format!("{}{text}{}", style.render(), style.render_reset())
}

/// One cell: its text and how to colour it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    pub fn new(text: impl Into<String>, tone: Tone) -> Self {
        Cell {
            text: text.into(),
            tone,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::new(text, Tone::Plain)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::new(text, Tone::Plain)
    }
}

/// `-` for a missing value, as every table shows it.
pub fn or_dash(value: Option<String>) -> Cell {
    match value {
        Some(v) if !v.is_empty() => Cell::from(v),
        _ => Cell::new("-", Tone::Dim),
    }
}

/// Columns as wide as their widest cell (in terminal columns, so CJK names line up),
/// two spaces apart; the last column is not padded, so no line ends in blanks.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    min_widths: Vec<usize>,
    rows: Vec<Vec<Cell>>,
}

const GAP: &str = "  ";

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            ..Table::default()
        }
    }

    /// Columns at least this wide: a listing printed page by page keeps its columns
    /// in place from one page to the next unless a cell is wider.
    pub fn min_widths(mut self, widths: &[usize]) -> Self {
        self.min_widths = widths.to_vec();
        self
    }

    pub fn row<C: Into<Cell>>(&mut self, cells: impl IntoIterator<Item = C>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for (w, min) in widths.iter_mut().zip(&self.min_widths) {
            *w = (*w).max(*min);
        }
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.text.width());
            }
        }
        widths
    }

    fn write_line<'a>(
        out: &mut String,
        widths: &[usize],
        cells: impl ExactSizeIterator<Item = (&'a str, Tone)>,
        color: bool,
    ) {
        let last = cells.len().saturating_sub(1);
        for (i, (text, tone)) in cells.enumerate() {
            if i > 0 {
                out.push_str(GAP);
            }
            out.push_str(&paint(text, tone, color));
            if i < last {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(text.width());
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }

    /// The table as text: a header line, then one line per row.
    pub fn render(&self, color: bool) -> String {
        let widths = self.widths();
        let mut out = String::new();
        Self::write_line(
            &mut out,
            &widths,
            self.headers.iter().map(|h| (h.as_str(), Tone::Heading)),
            color,
        );
        self.render_rows(&widths, &mut out, color);
        out
    }

    /// Only the rows, at the widths a header already printed would have: for a
    /// listing that prints one page at a time.
    pub fn render_rows_only(&self, color: bool) -> String {
        let mut out = String::new();
        self.render_rows(&self.widths(), &mut out, color);
        out
    }

    fn render_rows(&self, widths: &[usize], out: &mut String, color: bool) {
        for row in &self.rows {
            Self::write_line(
                out,
                widths,
                row.iter().map(|c| (c.text.as_str(), c.tone)),
                color,
            );
        }
    }
}

/// Writes `value` as one pretty JSON document and a newline: what `--format json`
/// promises scripts, whatever the listing.
pub fn write_json(value: &impl serde::Serialize, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// [`write_json`] to standard output.
pub fn print_json(value: &impl serde::Serialize) -> std::io::Result<()> {
    write_json(
        value,
        &mut std::io::BufWriter::new(std::io::stdout().lock()),
    )
}

/// Writes text to standard output, reporting a closed pipe as an error rather than
/// panicking as `print!` would (`scimsync key list | head` must not crash).
pub fn print_text(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_the_last_is_not_padded() {
        let mut t = Table::new(["ID", "USER", "NAME"]);
        t.row(["1", "alice@example.com", "laptop"]);
        t.row(["22", "李", "-"]);
        assert_eq!(
            t.render(false),
            "ID  USER               NAME\n\
             1   alice@example.com  laptop\n\
             22  李                 -\n"
        );
    }

    #[test]
    fn colour_only_when_asked_and_never_in_the_padding() {
        let mut t = Table::new(["STATE", "NAME"]);
        t.row([Cell::new("active", Tone::Good), Cell::from("k")]);
        let plain = t.render(false);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = t.render(true);
        assert!(
            coloured.contains("\x1b[32mactive\x1b[0m  k"),
            "{coloured:?}"
        );
    }

    #[test]
    fn minimum_widths_hold_columns_in_place() {
        let mut t = Table::new(["A", "B"]).min_widths(&[5]);
        t.row(["x", "y"]);
        assert_eq!(t.render_rows_only(false), "x      y\n");
    }
}
