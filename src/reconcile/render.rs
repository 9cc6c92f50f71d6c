//! Showing a plan: text like `terraform plan` for people, JSON for programs, and the
//! per-operation record the audit log keeps.

use super::ops::{Op, Plan};
use super::policy::{Guard, ALLOW_DELETIONS_FLAG};
use super::record::change_value;
pub use super::record::op_record;
pub use super::record::OpRecord;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use uuid::Uuid;

/// JSON-escaped (and quoted) names, computed once per user and team rather than once
/// per membership: a first pull writes a million membership records.
struct EscapedNames {
    users: HashMap<Uuid, String>,
    teams: HashMap<Uuid, String>,
}

impl EscapedNames {
    fn new(plan: &Plan) -> Self {
        let esc = |n: &String| serde_json::to_string(n).unwrap_or_else(|_| "null".into());
        EscapedNames {
            users: plan
                .user_names
                .iter()
                .map(|(id, n)| (*id, esc(n)))
                .collect(),
            teams: plan
                .team_names
                .iter()
                .map(|(id, n)| (*id, esc(n)))
                .collect(),
        }
    }

    /// The escaped name, or the id (quoted) when the plan has no name for it.
    fn get<'a>(map: &'a HashMap<Uuid, String>, id: Uuid, spare: &'a mut String) -> &'a str {
        match map.get(&id) {
            Some(n) => n,
            None => {
                *spare = format!("\"{id}\"");
                spare
            }
        }
    }
}

/// Writes the machine-readable rendering (`plan --format json`): one operation per line,
/// streamed, so that memory does not grow with the JSON.
pub fn write_json(plan: &Plan, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let counts = plan.counts();
    let head = json!({
        "format_version": plan.format_version,
        "fingerprint": plan.fingerprint,
        "source": plan.source.to_string(),
    });
    let head = serde_json::to_string_pretty(&head)?;
    // The head's closing brace is replaced by the operations and the rest.
    let head = head.trim_end().trim_end_matches('}').trim_end();
    writeln!(out, "{head},")?;
    writeln!(out, "  \"operations\": [")?;
    let names = EscapedNames::new(plan);
    let source = serde_json::to_string(&plan.source.to_string())?;
    let (mut spare_user, mut spare_team) = (String::new(), String::new());
    for (n, op) in plan.ops.iter().enumerate() {
        out.write_all(b"    ")?;
        match op {
            // Written by hand with the same shape `op_record` gives, for speed.
            Op::AddMember { team_id, user_id } | Op::RemoveMember { team_id, user_id } => {
                let team = EscapedNames::get(&names.teams, *team_id, &mut spare_team);
                let user = EscapedNames::get(&names.users, *user_id, &mut spare_user);
                let (kind, before, after) = match op {
                    Op::AddMember { .. } => (
                        "add_member",
                        "null".to_owned(),
                        format!("{{\"source\":{source}}}"),
                    ),
                    _ => (
                        "remove_member",
                        "{\"member\":true}".to_owned(),
                        "null".to_owned(),
                    ),
                };
                let refused = if plan.is_refused(op) {
                    ",\"refused\":true"
                } else {
                    ""
                };
                write!(
                    out,
                    "{{\"kind\":\"{kind}\",\"target\":{{\"type\":\"membership\",\"team_id\":\"{team_id}\",\
                     \"team\":{team},\"user_id\":\"{user_id}\",\"user_name\":{user}}},\
                     \"before\":{before},\"after\":{after}{refused}}}"
                )?;
            }
            other if plan.is_refused(other) => {
                let mut record = serde_json::to_value(op_record(plan, other))?;
                if let Value::Object(fields) = &mut record {
                    fields.insert("refused".into(), Value::Bool(true));
                }
                serde_json::to_writer(&mut *out, &record)?;
            }
            other => serde_json::to_writer(&mut *out, &op_record(plan, other))?,
        }
        out.write_all(if n + 1 < plan.ops.len() {
            b",\n"
        } else {
            b"\n"
        })?;
    }
    writeln!(out, "  ],")?;
    let gone = plan.team_deletions;
    writeln!(
        out,
        "  \"summary\": {{\"add\": {}, \"change\": {}, \"destroy\": {}, \
         \"team_deletions\": {{\"teams\": {}, \"memberships\": {}, \"keys\": {}}}}},",
        counts.add, counts.change, counts.destroy, gone.teams, gone.memberships, gone.keys
    )?;
    writeln!(
        out,
        "  \"guard\": {},",
        serde_json::to_string(&guard_json(plan))?
    )?;
    writeln!(
        out,
        "  \"warnings\": {}",
        serde_json::to_string(&plan.warnings)?
    )?;
    writeln!(out, "}}")
}

/// The guards' verdict as the JSON plan carries it: `{"refused": false}` when the plan
/// is within their limits; otherwise which guard, what it counted against what limit,
/// and the flag that lifts it (`refused` is false when that flag did).
fn guard_json(plan: &Plan) -> Value {
    match &plan.guard {
        None => json!({"refused": false}),
        Some(v) => json!({
            "refused": v.refused,
            "guard": v.guard.as_str(),
            "reason": v.reason(),
            "deletions": v.count,
            "with_deleted_teams": v.with_deleted_teams,
            "limit": v.limit,
            "managed": v.managed,
            "allowed_by": ALLOW_DELETIONS_FLAG,
        }),
    }
}

/// [`write_json`] into a string.
pub fn render_json(plan: &Plan) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_json(plan, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The plan's colours (anstyle writes the codes), or none: the caller decides, from
/// [`crate::output::stdout_color`] on the command line.
struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, style: anstyle::Style, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }
    fn add(&self, t: &str) -> String {
        self.paint(anstyle::AnsiColor::Green.on_default(), t)
    }
    fn change(&self, t: &str) -> String {
        self.paint(anstyle::AnsiColor::Yellow.on_default(), t)
    }
    fn destroy(&self, t: &str) -> String {
        self.paint(anstyle::AnsiColor::Red.on_default(), t)
    }
    fn bold(&self, t: &str) -> String {
        self.paint(anstyle::Style::new().bold(), t)
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    }
}

fn is_multiline(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `name: before → after`, or a line diff (the `similar` crate) for JSON objects.
fn write_change(
    out: &mut String,
    s: &Style,
    indent: &str,
    name: &str,
    before: &Value,
    after: &Value,
) {
    if is_multiline(before) || is_multiline(after) {
        let _ = writeln!(out, "{indent}{} {name}:", s.change("~"));
        let old = if before.is_null() {
            String::new()
        } else {
            pretty(before) + "\n"
        };
        let new = if after.is_null() {
            String::new()
        } else {
            pretty(after) + "\n"
        };
        let diff = similar::TextDiff::from_lines(&old, &new);
        for change in diff.iter_all_changes() {
            let line = change.value().trim_end_matches('\n');
            let _ = match change.tag() {
                similar::ChangeTag::Delete => {
                    writeln!(out, "{indent}    {}", s.destroy(&format!("- {line}")))
                }
                similar::ChangeTag::Insert => {
                    writeln!(out, "{indent}    {}", s.add(&format!("+ {line}")))
                }
                similar::ChangeTag::Equal => writeln!(out, "{indent}      {line}"),
            };
        }
    } else {
        let _ = writeln!(
            out,
            "{indent}{} {name}: {} → {}",
            s.change("~"),
            show(before),
            show(after)
        );
    }
}

fn write_attrs(out: &mut String, s: &Style, indent: &str, attrs: &Value) {
    let Value::Object(map) = attrs else { return };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in map {
        if v.is_null() || matches!(v, Value::Object(m) if m.is_empty()) {
            continue;
        }
        if is_multiline(v) {
            let _ = writeln!(out, "{indent}{} {k}:", s.add("+"));
            for line in pretty(v).lines() {
                let _ = writeln!(out, "{indent}      {line}");
            }
        } else {
            let _ = writeln!(out, "{indent}{} {k:<width$} = {}", s.add("+"), show(v));
        }
    }
}

/// The attributes of a created user or team as shown: the id first, then what was
/// given, without the name that is already in the header.
fn creation_attrs(id: Uuid, after: &Value, name_key: &str) -> Value {
    let mut shown = Map::new();
    shown.insert("id".into(), json!(id));
    if let Value::Object(m) = after {
        for (k, v) in m {
            if k != name_key {
                shown.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(shown)
}

/// Names by id for rendering: a hash map, since the plan's ordered maps are slow to
/// search a million times at random. An empty name stands for "unknown: show the id".
struct Names<'a> {
    users: HashMap<Uuid, &'a str>,
}

impl<'a> Names<'a> {
    fn new(plan: &'a Plan) -> Self {
        Names {
            users: plan
                .user_names
                .iter()
                .map(|(id, n)| (*id, n.as_str()))
                .collect(),
        }
    }

    fn user(&self, id: Uuid) -> &'a str {
        self.users.get(&id).copied().unwrap_or("")
    }
}

/// The human rendering (`plan`, the default): grouped by user and by team, `+` create,
/// `~` update with per-attribute before → after, `-` destroy, then the summary line.
pub fn render_text(plan: &Plan, color: bool) -> String {
    let s = Style { color };
    let mut out = String::new();
    if plan.ops.is_empty() {
        for w in &plan.warnings {
            let _ = writeln!(out, "{} {w}", s.change("Warning:"));
        }
        out.push_str("No changes. The store matches the desired state.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "scimsync will perform the following actions (source {}):\n",
        plan.source
    );

    // Group: user-level operations by user; team-level and membership ones by team.
    let mut by_user: HashMap<Uuid, Vec<&Op>> = HashMap::default();
    let mut by_team: HashMap<Uuid, Vec<&Op>> = HashMap::default();
    for op in &plan.ops {
        let team = match op {
            Op::CreateTeam(_)
            | Op::UpdateTeam { .. }
            | Op::DeleteTeam { .. }
            | Op::AddMember { .. }
            | Op::RemoveMember { .. } => op.team_id(),
            Op::PurgeKeys {
                team_id: Some(t), ..
            } => Some(*t),
            _ => None,
        };
        match (team, op.user_id()) {
            (Some(t), _) => by_team.entry(t).or_default().push(op),
            (None, Some(u)) => by_user.entry(u).or_default().push(op),
            (None, None) => {}
        }
    }
    let ordered = |ids: Vec<Uuid>, label: &dyn Fn(Uuid) -> String| {
        let mut keyed: Vec<(String, Uuid)> = ids
            .into_iter()
            .map(|id| (label(id).to_lowercase(), id))
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    };
    let users = ordered(by_user.keys().copied().collect(), &|id| {
        plan.user_label(id).into_owned()
    });
    let teams = ordered(by_team.keys().copied().collect(), &|id| {
        plan.team_label(id).into_owned()
    });

    let names = Names::new(plan);
    for id in users {
        let ops = &by_user[&id];
        write_user(&mut out, &s, plan, id, ops);
    }
    for id in teams {
        let ops = &by_team[&id];
        write_team(&mut out, &s, plan, &names, id, ops);
    }

    for w in &plan.warnings {
        let _ = writeln!(out, "{} {w}", s.change("Warning:"));
    }
    if !plan.warnings.is_empty() {
        out.push('\n');
    }
    let c = plan.counts();
    let _ = write!(
        out,
        "{} {} to add, {} to change, {} to destroy.",
        s.bold("Plan:"),
        c.add,
        c.change,
        c.destroy
    );
    let gone = plan.team_deletions;
    if gone.teams > 0 {
        let _ = write!(
            out,
            " {}",
            s.destroy(&format!(
                "Deleting {} takes {} and {} with {}.",
                counted(gone.teams, "team", "teams"),
                counted(gone.memberships, "membership", "memberships"),
                counted(gone.keys, "API key", "API keys"),
                if gone.teams == 1 { "it" } else { "them" }
            ))
        );
    }
    out.push('\n');
    write_verdict(&mut out, &s, plan);
    out
}

/// Marks an operation the guard refuses, in the text rendering.
const REFUSED_MARK: &str = "[refused]";

/// Under the summary line: what the guard thinks of the plan, and what lifts it.
fn write_verdict(out: &mut String, s: &Style, plan: &Plan) {
    let Some(v) = &plan.guard else { return };
    let what = match v.guard {
        Guard::Deletions => "deletion",
        Guard::MembershipRemovals => "membership",
    };
    if v.refused {
        // Key purges are shown with the removal they come with, and not counted apart.
        let marked = plan
            .ops
            .iter()
            .filter(|op| plan.is_refused(op) && !matches!(op, Op::PurgeKeys { .. }))
            .count();
        let _ = writeln!(
            out,
            "\n{} {}\n{}",
            s.destroy("Refused by the guard:"),
            v.reason(),
            s.destroy(&format!(
                "`scimsync apply` refuses this plan: the {marked} removals marked \
                 {REFUSED_MARK} are what the {what} guard holds back. To apply it anyway, \
                 re-run with {ALLOW_DELETIONS_FLAG}."
            ))
        );
    } else {
        let _ = writeln!(
            out,
            "\n{} {ALLOW_DELETIONS_FLAG} lifts the {what} guard for this plan: {} of {} \
             managed, above the limit of {}.",
            s.change("Guard lifted:"),
            v.count,
            v.managed,
            v.limit
        );
    }
}

fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// ` [refused]` after a header when the guard refuses any of these operations.
fn mark(s: &Style, plan: &Plan, ops: &[&Op]) -> String {
    if ops.iter().any(|op| plan.is_refused(op)) {
        format!(" {}", s.destroy(REFUSED_MARK))
    } else {
        String::new()
    }
}

fn write_user(out: &mut String, s: &Style, plan: &Plan, id: Uuid, ops: &[&Op]) {
    let name = plan.user_label(id);
    let head = ops.iter().find(|op| {
        matches!(
            op,
            Op::CreateUser(_)
                | Op::DeleteUser { .. }
                | Op::DeactivateUser { .. }
                | Op::UpdateUser { .. }
        )
    });
    let header = match head {
        Some(Op::CreateUser(_)) => format!("{} user {name}", s.add("+")),
        Some(Op::DeleteUser { .. }) => format!("{} user {name}", s.destroy("-")),
        Some(Op::DeactivateUser { .. }) => format!("{} user {name} (deactivate)", s.change("~")),
        _ => format!("{} user {name}", s.change("~")),
    };
    let _ = writeln!(out, "  {}{}", s.bold(&header), mark(s, plan, ops));
    for op in ops {
        match op {
            Op::CreateUser(u) => {
                let rec = op_record(plan, op);
                write_attrs(
                    out,
                    s,
                    "      ",
                    &creation_attrs(u.id, &rec.after, "user_name"),
                );
            }
            Op::UpdateUser { changes, .. } => {
                for c in changes {
                    write_change(
                        out,
                        s,
                        "      ",
                        &c.attribute,
                        &change_value(c, &c.before),
                        &change_value(c, &c.after),
                    );
                }
            }
            Op::DeactivateUser { .. } => {
                write_change(
                    out,
                    s,
                    "      ",
                    "active",
                    &Value::Bool(true),
                    &Value::Bool(false),
                );
            }
            Op::DeleteUser { .. } => {
                let _ = writeln!(
                    out,
                    "      {} the user and their memberships",
                    s.destroy("-")
                );
            }
            Op::BlockKeys { .. } => {
                let _ = writeln!(
                    out,
                    "      {} keys: block (until reactivated)",
                    s.change("~")
                );
            }
            Op::UnblockKeys { .. } => {
                let _ = writeln!(
                    out,
                    "      {} keys: unblock those provisioning blocked",
                    s.change("~")
                );
            }
            Op::PurgeKeys { .. } => {
                let _ = writeln!(
                    out,
                    "      {} keys: purge all (an audit copy is kept)",
                    s.destroy("-")
                );
            }
            _ => {}
        }
    }
    out.push('\n');
}

fn write_team(out: &mut String, s: &Style, plan: &Plan, names: &Names, id: Uuid, ops: &[&Op]) {
    let name = plan.team_label(id);
    let header = if ops.iter().any(|op| matches!(op, Op::CreateTeam(_))) {
        format!("{} team \"{name}\"", s.add("+"))
    } else if ops.iter().any(|op| matches!(op, Op::DeleteTeam { .. })) {
        format!("{} team \"{name}\"", s.destroy("-"))
    } else {
        format!("{} team \"{name}\"", s.change("~"))
    };
    // The team's own removal; its members' removals are marked on their lines.
    let own: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| {
            !matches!(
                op,
                Op::RemoveMember { .. }
                    | Op::PurgeKeys {
                        user_id: Some(_),
                        ..
                    }
            )
        })
        .collect();
    let _ = writeln!(out, "  {}{}", s.bold(&header), mark(s, plan, &own));
    let mut adds: Vec<(&str, Uuid)> = Vec::new();
    let mut removes: Vec<(&str, Uuid)> = Vec::new();
    let mut purged: HashSet<Uuid> = HashSet::default();
    for op in ops {
        match op {
            Op::CreateTeam(t) => {
                let rec = op_record(plan, op);
                write_attrs(
                    out,
                    s,
                    "      ",
                    &creation_attrs(t.id, &rec.after, "display_name"),
                );
            }
            Op::UpdateTeam { changes, .. } => {
                for c in changes {
                    write_change(out, s, "      ", &c.attribute, &c.before, &c.after);
                }
            }
            Op::DeleteTeam { .. } => {
                let _ = writeln!(out, "      {} the team and its memberships", s.destroy("-"));
            }
            Op::PurgeKeys { user_id: None, .. } => {
                let _ = writeln!(
                    out,
                    "      {} keys: purge every key scoped to this team",
                    s.destroy("-")
                );
            }
            Op::PurgeKeys {
                user_id: Some(u), ..
            } => {
                purged.insert(*u);
            }
            Op::AddMember { user_id, .. } => adds.push((names.user(*user_id), *user_id)),
            Op::RemoveMember { user_id, .. } => removes.push((names.user(*user_id), *user_id)),
            _ => {}
        }
    }
    // Case-insensitive order without allocating a folded key per member.
    let by_name = |a: &(&str, Uuid), b: &(&str, Uuid)| {
        a.0.bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.0.bytes().map(|c| c.to_ascii_lowercase()))
            .then(a.1.cmp(&b.1))
    };
    adds.sort_unstable_by(by_name);
    removes.sort_unstable_by(by_name);
    let plus = s.add("+");
    let minus = s.destroy("-");
    // With a refusal every removal is refused, so one test covers each member line.
    let refused = if plan.refusal().is_some() {
        format!(" {}", s.destroy(REFUSED_MARK))
    } else {
        String::new()
    };
    for (n, id) in adds {
        out.push_str("      ");
        out.push_str(&plus);
        out.push_str(" member ");
        if n.is_empty() {
            let _ = write!(out, "{id}");
        } else {
            out.push_str(n);
        }
        out.push('\n');
    }
    for (n, id) in removes {
        let shown = if n.is_empty() {
            id.to_string()
        } else {
            n.to_owned()
        };
        let note = if purged.contains(&id) {
            " (and their keys for this team)"
        } else {
            ""
        };
        let _ = writeln!(out, "      {minus} member {shown}{note}{refused}");
    }
    out.push('\n');
}
