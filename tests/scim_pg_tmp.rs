use scimsync::domain::{Role, Source, User, UserName, Team, TeamName};
use scimsync::scim::filter::parse_filter;
use scimsync::store::scim_query::ListQuery;
use scimsync::store::Store;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn postgres_filters() {
    let url = "postgres://postgres@127.0.0.1:55432/postgres";
    let store = Store::open(url, 4).await.unwrap();
    let now = scimsync::store::now();
    let mut tx = store.begin_write().await.unwrap();
    let mk = |name: &str, attrs: serde_json::Value, email: Option<&str>, active: bool| User {
        id: Uuid::new_v4(), user_name: UserName::parse(name).unwrap(), external_id: Some(format!("EXT-{name}")),
        email: email.map(str::to_owned), display_name: Some(format!("Display {name}")), given_name: Some("Giv".into()), family_name: None,
        role: Role::viewer(), active, attributes: attrs.as_object().unwrap().clone(), source: Source::Scim, created: now, modified: now, version: 1 };
    let a = mk("Alice", json!({"emails": [{"value": "alice@example.com", "type": "work", "primary": true}], "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D", "manager": {"value": "m1"}}, "title": "CTO"}), Some("alice@example.com"), true);
    let b = mk("bob_100%", json!({"roles": ["x"]}), Some("bob@other.test"), false);
    tx.insert_user(&a).await.unwrap();
    tx.insert_user(&b).await.unwrap();
    let team = Team { id: Uuid::new_v4(), display_name: TeamName::parse("Team").unwrap(), external_id: None, metadata: Default::default(), source: Source::Scim, created: now, modified: now, version: 1 };
    tx.insert_team(&team).await.unwrap();
    tx.add_member(team.id, a.id, &Source::Scim).await.unwrap();
    tx.commit().await.unwrap();
    for f in ["userName eq \"alice\"", "userName co \"_100%\"", "externalId sw \"EXT-A\"", "externalId ew \"ice\"", "externalId co \"lic\"",
              "emails[type eq \"work\" and value co \"@example.com\"]", "emails.value eq \"BOB@other.test\"", "emails[primary eq true]",
              "active eq false", "not (active eq true)", "title pr", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"r&d\"",
              "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"m1\"", "roles eq \"x\"",
              &format!("groups.value eq \"{}\"", team.id), "meta.created le \"2999-01-01T00:00:00Z\"", "displayName ne \"x\""] {
        let filter = parse_filter(f).unwrap();
        let q = ListQuery { filter: Some(&filter), sort_by: None, descending: false, offset: 0, limit: 10 };
        let r = store.scim_users(&q).await.unwrap_or_else(|e| panic!("{f}: {e:?}"));
        println!("{f} => {} {:?}", r.total, r.items.iter().map(|u| u.user_name.as_str().to_owned()).collect::<Vec<_>>());
    }
    let sort = scimsync::scim::filter::AttrPath { urn: None, attr: "userName".into(), sub_attr: None };
    let q = ListQuery { filter: None, sort_by: Some(&sort), descending: true, offset: 0, limit: 10 };
    println!("sorted {:?}", store.scim_users(&q).await.unwrap().items.iter().map(|u| u.user_name.as_str().to_owned()).collect::<Vec<_>>());
    let filter = parse_filter(&format!("members[value eq \"{}\"]", a.id)).unwrap();
    let q = ListQuery { filter: Some(&filter), sort_by: None, descending: false, offset: 0, limit: 10 };
    println!("teams {}", store.scim_teams(&q).await.unwrap().total);
    println!("members {:?}", store.members_of_teams(&[team.id]).await.unwrap());
    println!("groups {:?}", store.groups_of_users(&[a.id]).await.unwrap());
    println!("big {:?}", store.team_has_more_members_than(team.id, 0).await.unwrap());
}
