//! The page frame (landmarks, navigation, sign-out) and small shared pieces.

use super::session::Admin;
use super::BASE;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Plans,
    Scim,
    Users,
    Teams,
    Keys,
    Audit,
}

const SECTIONS: &[(Section, &str, &str)] = &[
    (Section::Overview, "", "Overview"),
    (Section::Plans, "/plans", "Plans"),
    (Section::Scim, "/scim", "SCIM setup"),
    (Section::Users, "/users", "Users"),
    (Section::Teams, "/teams", "Teams"),
    (Section::Keys, "/keys", "Keys"),
    (Section::Audit, "/audit", "Audit"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · scimsync" }
            link rel="stylesheet" href={(BASE) "/static/console.css"};
            script src={(BASE) "/static/console.js"} defer {}
        }
    }
}

/// A page for a signed-in admin.
pub fn page(admin: &Admin, section: Section, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(BASE) { "scimsync" }
                    nav aria-label="Console" {
                        ul {
                            @for (s, path, label) in SECTIONS {
                                li {
                                    a href={(BASE) (path)} aria-current=[(*s == section).then_some("page")] {
                                        (label)
                                        @if *s == Section::Plans && admin.pending_plans > 0 {
                                            " " span.badge { (admin.pending_plans)
                                                span.visually-hidden { " awaiting a decision" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    form.sign-out method="post" action={(BASE) "/sign-out"} {
                        (csrf(admin))
                        span.who { "Signed in as " strong { (admin.token_name) } }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// A page without navigation: sign-in, and errors.
pub fn signed_out(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href=(BASE) { "scimsync" } }
                main id="main" .narrow { (body) }
            }
        }
    }
}

/// A short message page (errors, refusals).
pub fn bare(title: &str, message: &str) -> Markup {
    signed_out(
        title,
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href=(BASE) { "Back to the console" } }
        },
    )
}

/// The hidden CSRF field every form carries.
pub fn csrf(admin: &Admin) -> Markup {
    html! { input type="hidden" name="csrf" value=(admin.csrf); }
}

pub fn when(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => {
            html! { time datetime=(crate::store::format_ts(at)) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
        }
        None => html! { span.muted { "never" } },
    }
}

/// A status line after an action (`role=status`, so screen readers announce it).
pub fn notice(text: Option<&str>) -> Markup {
    html! { @if let Some(text) = text { p.notice role="status" { (text) } } }
}

/// Previous/next links for an offset-paged list.
pub fn pager(base: &str, query: &str, offset: u64, limit: u64, total: u64) -> Markup {
    let first = if total == 0 { 0 } else { offset + 1 };
    let last = (offset + limit).min(total);
    let link = |to: u64| {
        if query.is_empty() {
            format!("{base}?offset={to}")
        } else {
            format!("{base}?{query}&offset={to}")
        }
    };
    html! {
        nav.pager aria-label="Pages" {
            span { "Showing " (first) "–" (last) " of " (total) }
            @if offset > 0 { a rel="prev" href=(link(offset.saturating_sub(limit))) { "← Previous" } }
            @if offset + limit < total { a rel="next" href=(link(offset + limit)) { "Next →" } }
        }
    }
}

/// The most plan lines a page shows: a first pull's plan can run to millions, which
/// no browser renders; the summary line is always kept.
pub const PLAN_LINES: usize = 2_000;

/// `text` cut to [`PLAN_LINES`] lines plus its summary line, saying which command
/// shows the whole plan.
pub fn shorten_plan(text: &str, whole: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= PLAN_LINES {
        return text.to_owned();
    }
    let summary = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Plan:"))
        .copied()
        .unwrap_or_default();
    format!(
        "{}\n\n… {} more lines; the whole plan: {whole}\n\n{summary}",
        lines[..PLAN_LINES].join("\n"),
        lines.len() - PLAN_LINES
    )
}

/// How a line of a rendered plan is coloured, by its marker: a CSS class (the CSP
/// allows no inline style).
fn plan_line_class(line: &str) -> Option<&'static str> {
    let marked = line.trim_start();
    if marked.starts_with("+ ") {
        Some("add")
    } else if marked.starts_with("- ") {
        Some("destroy")
    } else if marked.starts_with("~ ") {
        Some("change")
    } else if line.starts_with("Plan:") {
        Some("summary")
    } else if line.starts_with("Refused by the guard")
        || line.starts_with("`scimsync apply` refuses")
    {
        Some("refusal")
    } else {
        None
    }
}

/// A rendered plan (`scimsync plan`'s text, without colour) as a box of its own that
/// scrolls sideways rather than widen the page; `label` names it for screen readers.
pub fn plan_text(text: &str, label: &str) -> Markup {
    html! {
        pre.plan role="region" tabindex="0" aria-label=(label) {
            @for line in text.lines() {
                @match plan_line_class(line) {
                    Some(class) => { span class=(class) { (line) } "\n" }
                    None => { (line) "\n" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_plan_is_cut_to_its_first_lines_and_keeps_its_summary() {
        let mut text: String = (0..5_000).map(|i| format!("  + user u{i}\n")).collect();
        text.push_str("\nPlan: 5000 to add, 0 to change, 0 to destroy.\n");
        let short = shorten_plan(&text, "scimsync plan --idp okta");
        assert_eq!(short.lines().count(), PLAN_LINES + 4);
        assert!(short.contains("3002 more lines; the whole plan: scimsync plan --idp okta"));
        assert!(short.ends_with("Plan: 5000 to add, 0 to change, 0 to destroy."));
        assert_eq!(shorten_plan("No changes.\n", "x"), "No changes.\n");
    }

    #[test]
    fn plan_lines_are_coloured_by_their_marker_through_classes() {
        let text = "scimsync will perform the following actions (source sync:entra):\n\n  \
                    + user zoe@example.com\n      + id = \"1\"\n  ~ team \"Evals\"\n      \
                    - member bob@example.com [refused]\n\nPlan: 2 to add, 0 to change, 1 to destroy.\n\
                    Refused by the guard: refusing to remove <b>\n";
        let html = plan_text(text, "Plan 3").into_string();
        assert!(
            html.contains(r#"<span class="add">  + user zoe@example.com</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="change">  ~ team &quot;Evals&quot;</span>"#),
            "{html}"
        );
        assert!(
            html.contains(
                r#"<span class="destroy">      - member bob@example.com [refused]</span>"#
            ),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="summary">Plan: 2 to add"#),
            "{html}"
        );
        assert!(
            html.contains(
                r#"<span class="refusal">Refused by the guard: refusing to remove &lt;b&gt;</span>"#
            ),
            "{html}"
        );
        assert!(!html.contains("style="), "{html}");
    }
}
