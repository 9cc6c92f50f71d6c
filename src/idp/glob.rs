//! Which IdP groups an `[[idp]]` manages: `groups = ["LLM *", "Evals", "<group id>"]`.
//!
//! A pattern matches a group's id exactly, or its name (or an alias such as Keycloak's
//! path) case-insensitively, where `*` stands for any run of characters and `?` for one.
//! A sync never reads or changes groups outside the selection.

use super::IdpGroup;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSelector {
    patterns: Vec<Vec<char>>,
    raw: Vec<String>,
}

impl GroupSelector {
    pub fn new(patterns: &[String]) -> Self {
        Self {
            patterns: patterns
                .iter()
                .map(|p| p.trim().to_lowercase().chars().collect())
                .collect(),
            raw: patterns.iter().map(|p| p.trim().to_owned()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when the group is selected by id, name or alias.
    pub fn matches(&self, group: &IdpGroup) -> bool {
        if self.raw.iter().any(|p| p == &group.id) {
            return true;
        }
        std::iter::once(&group.name)
            .chain(group.aliases.iter())
            .any(|name| self.matches_name(name))
    }

    /// True when a name (not an id) is selected.
    pub fn matches_name(&self, name: &str) -> bool {
        let name: Vec<char> = name.trim().to_lowercase().chars().collect();
        self.patterns.iter().any(|p| glob_match(p, &name))
    }
}

/// Iterative wildcard matching with single-star backtracking: linear in practice and
/// never exponential, whatever the pattern.
fn glob_match(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(p: &[&str]) -> GroupSelector {
        GroupSelector::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn group(id: &str, name: &str) -> IdpGroup {
        IdpGroup::new(id, name)
    }

    #[test]
    fn a_prefix_pattern_selects_groups_by_name_ignoring_case() {
        let s = sel(&["LLM *"]);
        assert!(s.matches(&group("1", "LLM Users")));
        assert!(s.matches(&group("1", "llm admins")));
        assert!(!s.matches(&group("1", "LLMUsers")));
        assert!(!s.matches(&group("1", "Sales")));
    }

    #[test]
    fn exact_names_and_ids_select_only_that_group() {
        let s = sel(&["Production LLM Evals Group", "0b5f-42"]);
        assert!(s.matches(&group("x", "production llm evals group")));
        assert!(s.matches(&group("0b5f-42", "Anything")));
        assert!(!s.matches(&group("x", "Production LLM Evals Group 2")));
    }

    #[test]
    fn question_marks_and_inner_stars_match_as_in_a_shell() {
        let s = sel(&["team-?", "*-eng-*"]);
        assert!(s.matches(&group("1", "team-a")));
        assert!(!s.matches(&group("1", "team-ab")));
        assert!(s.matches(&group("1", "emea-eng-platform")));
        assert!(!s.matches(&group("1", "emea-sales")));
    }

    #[test]
    fn an_alias_such_as_a_keycloak_path_can_be_selected() {
        let mut g = group("1", "child");
        g.aliases.push("/parent/child".into());
        assert!(sel(&["/parent/*"]).matches(&g));
    }

    #[test]
    fn an_empty_selection_selects_nothing() {
        assert!(!sel(&[]).matches(&group("1", "LLM Users")));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let s = sel(&["*a*a*a*a*a*a*a*a*b"]);
        assert!(!s.matches_name(&"a".repeat(5000)));
    }
}
