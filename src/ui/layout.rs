//! The page frame (landmarks, navigation, sign-out) and small shared pieces.

use super::session::Admin;
use super::BASE;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Scim,
    Users,
    Teams,
    Keys,
    Audit,
}

const SECTIONS: &[(Section, &str, &str)] = &[
    (Section::Overview, "", "Overview"),
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
                                    @if *s == section {
                                        a href={(BASE) (path)} aria-current="page" { (label) }
                                    } @else {
                                        a href={(BASE) (path)} { (label) }
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
