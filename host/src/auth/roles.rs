//! Reading the host's one role out of an identity provider's token: the
//! provider puts roles where it likes (`role`, Keycloak's
//! `realm_access.roles`, a namespaced claim) and often several, while the
//! host gives each user exactly one.

use serde_json::Value;

use super::{ADMIN, PATIENT};

/// Where a token carries its roles (`JWT_ROLE_CLAIM`): a claim named by the
/// whole string, or else a dot path through nested objects.
#[derive(Debug, Clone)]
pub(super) struct RoleClaim {
    name: String,
}

impl RoleClaim {
    /// The claim at `name`; an empty name, or one with an empty step
    /// (`a..b`), is refused at start rather than matching nothing.
    pub(super) fn new(name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !name.is_empty() && name.split('.').all(|step| !step.is_empty()),
            "JWT_ROLE_CLAIM `{name}` is not a claim name or a dot path such as realm_access.roles"
        );
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The claim's value: a top-level claim of that exact name first (some
    /// providers put URLs, dots and all, in claim names), else the path.
    fn find<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        claims.get(&self.name).or_else(|| {
            self.name
                .split('.')
                .try_fold(claims, |value, step| value.get(step))
        })
    }

    /// The token's role, or why it has none: a string is the role; from a
    /// list of strings, [`choose`].
    pub(super) fn role(&self, claims: &Value, clinical_roles: &[String]) -> Result<String, String> {
        let missing = || format!("it carries no role in `{}`", self.name);
        match self.find(claims).ok_or_else(missing)? {
            Value::String(role) if !role.is_empty() => Ok(role.clone()),
            Value::Array(values) => {
                let roles: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
                choose(&roles, clinical_roles)
                    .map(str::to_owned)
                    .ok_or_else(missing)
            }
            _ => Err(format!(
                "`{}` is neither a role nor a list of roles",
                self.name
            )),
        }
    }
}

/// The one role a user with several gets, the same whatever order the
/// provider lists them in: `admin` if held; else the first of
/// `CLINICAL_ROLES`, in that setting's order, that is held; else `patient`;
/// else the first listed (a role that reads no chart, such as Keycloak's
/// `offline_access`). None from an empty list.
fn choose<'a>(roles: &[&'a str], clinical_roles: &[String]) -> Option<&'a str> {
    let held = |wanted: &str| roles.iter().copied().find(|role| *role == wanted);
    held(ADMIN)
        .or_else(|| clinical_roles.iter().find_map(|clinical| held(clinical)))
        .or_else(|| held(PATIENT))
        .or_else(|| roles.iter().copied().find(|role| !role.is_empty()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn clinical() -> Vec<String> {
        ["provider", "nurse", "physician"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn a_string_claim_is_the_role() {
        let claim = RoleClaim::new("role").unwrap();
        assert_eq!(
            claim.role(&json!({"role": "nurse"}), &clinical()).unwrap(),
            "nurse"
        );
        assert!(claim.role(&json!({"role": ""}), &clinical()).is_err());
        assert!(claim.role(&json!({"role": 3}), &clinical()).is_err());
        assert!(claim.role(&json!({}), &clinical()).is_err());
    }

    #[test]
    fn keycloak_realm_roles_are_found_by_path() {
        let claim = RoleClaim::new("realm_access.roles").unwrap();
        let token = |roles: Value| json!({"realm_access": {"roles": roles}});
        let role = |roles| claim.role(&token(roles), &clinical());
        assert_eq!(
            role(json!(["offline_access", "physician"])).unwrap(),
            "physician"
        );
        assert_eq!(role(json!(["offline_access"])).unwrap(), "offline_access");
        assert!(role(json!([])).is_err());
        assert!(role(json!([1, null])).is_err());
        assert!(
            claim
                .role(&json!({"realm_access": {}}), &clinical())
                .is_err()
        );
        assert!(
            claim
                .role(&json!({"realm_access": "x"}), &clinical())
                .is_err()
        );
    }

    #[test]
    fn a_claim_named_with_dots_is_read_whole_first() {
        let claim = RoleClaim::new("https://hospital.example/roles").unwrap();
        let token = json!({"https://hospital.example/roles": ["nurse"]});
        assert_eq!(claim.role(&token, &clinical()).unwrap(), "nurse");
    }

    #[test]
    fn several_roles_give_one_whatever_their_order() {
        let clinical = clinical();
        for (roles, expected) in [
            (vec!["nurse", "admin"], Some("admin")),
            // CLINICAL_ROLES' order decides, not the token's.
            (vec!["physician", "nurse"], Some("nurse")),
            (vec!["nurse", "physician"], Some("nurse")),
            (vec!["patient", "physician"], Some("physician")),
            (vec!["offline_access", "patient"], Some("patient")),
            (
                vec!["offline_access", "uma_authorization"],
                Some("offline_access"),
            ),
            (vec![], None),
        ] {
            assert_eq!(choose(&roles, &clinical), expected, "{roles:?}");
        }
    }

    #[test]
    fn empty_paths_are_refused() {
        for name in ["", ".", "realm_access.", "a..b"] {
            assert!(RoleClaim::new(name).is_err(), "{name}");
        }
    }
}
