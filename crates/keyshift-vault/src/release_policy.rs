//! Key release policies (Azure's key management policy grammar, version 1.0.0): parsing with
//! every rule of the grammar checked, the normal form the vault stores and returns, and the
//! evaluation of a policy over the claims of a verified attestation token. Pure: no store, no IO.
//!
//! ```text
//! policy          = { "version": "1.0.0", "anyOf": [ authority, ... ] }      (root is anyOf)
//! authority       = { "authority": <issuer>, ("allOf" | "anyOf"): [ condition, ... ] }
//! condition       = claim_condition | { "anyOf": [condition, ...] } | { "allOf": [condition, ...] }
//! claim_condition = { "claim": <dot.path>, <operator>: <string | number | true | false> }
//! operator        = equals | notEquals | less | lessOrEquals | greater | greaterOrEquals | exists
//! ```
//!
//! Decisions where the grammar is silent: a missing `version` (as in Azure's own CVM policy) and
//! `"1.0"` mean 1.0.0; a root `allOf` is refused; `exists` takes a boolean; a claim that is absent
//! (or an object or array) makes its comparison false; scalars compare by their canonical JSON
//! text (`true`, `1`, `abc`), so `"true"` equals `true`; the ordering operators need both sides
//! numeric (a string of digits counts); an authority matches the token's `iss` after one
//! trailing `/` is trimmed from each.

use serde_json::{Map, Value};

/// The only grammar version, as stored.
pub const POLICY_VERSION: &str = "1.0.0";
/// Largest policy document accepted.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Deepest nesting of allOf/anyOf accepted.
const MAX_DEPTH: usize = 16;
/// Most conditions in one policy.
const MAX_CONDITIONS: usize = 1024;

/// A comparison of a claim condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `equals`
    Equals,
    /// `notEquals`
    NotEquals,
    /// `less`
    Less,
    /// `lessOrEquals`
    LessOrEquals,
    /// `greater`
    Greater,
    /// `greaterOrEquals`
    GreaterOrEquals,
    /// `exists` (takes `true` or `false`)
    Exists,
}

impl Operator {
    const ALL: [Operator; 7] = [
        Operator::Equals,
        Operator::NotEquals,
        Operator::Less,
        Operator::LessOrEquals,
        Operator::Greater,
        Operator::GreaterOrEquals,
        Operator::Exists,
    ];

    /// The grammar's name.
    pub fn name(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEquals => "notEquals",
            Operator::Less => "less",
            Operator::LessOrEquals => "lessOrEquals",
            Operator::Greater => "greater",
            Operator::GreaterOrEquals => "greaterOrEquals",
            Operator::Exists => "exists",
        }
    }
}

/// A condition of the grammar.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every condition holds.
    AllOf(Vec<Condition>),
    /// At least one condition holds.
    AnyOf(Vec<Condition>),
    /// A claim compared with a value.
    Claim {
        /// Dot path of the claim.
        claim: String,
        /// The comparison.
        operator: Operator,
        /// The value, a JSON scalar.
        value: Value,
    },
}

/// One authority of a policy and what its tokens must show.
#[derive(Debug, Clone, PartialEq)]
pub struct Authority {
    /// The issuer, as written in the policy.
    pub authority: String,
    /// Its rule: an `AllOf` or `AnyOf` condition.
    pub rule: Condition,
}

/// A parsed, valid release policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePolicy {
    /// The authorities, any of which may vouch for a release.
    pub authorities: Vec<Authority>,
}

/// Trims one trailing `/`: the form in which authorities and `iss` are compared.
pub fn normalize_authority(url: &str) -> &str {
    url.strip_suffix('/').unwrap_or(url)
}

fn list<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    match v.as_array() {
        Some(items) if !items.is_empty() => Ok(items),
        _ => Err(format!("'{what}' must be a non-empty array")),
    }
}

struct Parser {
    conditions: usize,
}

impl Parser {
    fn conditions(&mut self, items: &[Value], depth: usize) -> Result<Vec<Condition>, String> {
        items.iter().map(|c| self.condition(c, depth)).collect()
    }

    fn condition(&mut self, v: &Value, depth: usize) -> Result<Condition, String> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(format!(
                "a policy holds at most {MAX_CONDITIONS} conditions"
            ));
        }
        if depth > MAX_DEPTH {
            return Err(format!("conditions are nested at most {MAX_DEPTH} deep"));
        }
        let obj = v
            .as_object()
            .ok_or("each condition must be a JSON object")?;
        if let Some(claim) = obj.get("claim") {
            let claim = claim
                .as_str()
                .filter(|c| !c.is_empty() && c.len() <= 256 && !c.chars().any(char::is_control))
                .ok_or("'claim' must be a non-empty claim name (dot notation for nested claims)")?;
            let mut found = None;
            for (key, value) in obj {
                if key == "claim" {
                    continue;
                }
                let op = Operator::ALL
                    .into_iter()
                    .find(|o| o.name() == key)
                    .ok_or_else(|| {
                        format!(
                            "unknown member in the condition on claim '{claim}': use one of equals, notEquals, less, lessOrEquals, greater, greaterOrEquals, exists"
                        )
                    })?;
                if found.is_some() {
                    return Err(format!(
                        "the condition on claim '{claim}' has more than one operator"
                    ));
                }
                let ok = match op {
                    Operator::Exists => value.is_boolean(),
                    _ => value.is_string() || value.is_number() || value.is_boolean(),
                };
                if !ok {
                    return Err(format!(
                        "the value of '{}' on claim '{claim}' must be {}",
                        op.name(),
                        if op == Operator::Exists {
                            "true or false"
                        } else {
                            "a string, number or boolean"
                        }
                    ));
                }
                found = Some((op, value.clone()));
            }
            let (operator, value) =
                found.ok_or_else(|| format!("the condition on claim '{claim}' has no operator"))?;
            return Ok(Condition::Claim {
                claim: claim.to_owned(),
                operator,
                value,
            });
        }
        match (obj.len(), obj.get("allOf"), obj.get("anyOf")) {
            (1, Some(all), None) => Ok(Condition::AllOf(
                self.conditions(list(all, "allOf")?, depth + 1)?,
            )),
            (1, None, Some(any)) => Ok(Condition::AnyOf(
                self.conditions(list(any, "anyOf")?, depth + 1)?,
            )),
            _ => Err(
                "a condition is either {\"claim\", <operator>} or exactly one of allOf and anyOf"
                    .into(),
            ),
        }
    }

    fn authority(&mut self, v: &Value) -> Result<Authority, String> {
        let obj = v
            .as_object()
            .ok_or("each member of the root anyOf must be an authority object")?;
        let authority = obj
            .get("authority")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty() && a.len() <= 2048 && !a.chars().any(char::is_control))
            .ok_or("each authority needs an 'authority' (the attestation issuer URL)")?;
        if let Some(other) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "authority" | "allOf" | "anyOf"))
        {
            return Err(format!(
                "unknown member '{}' in authority '{authority}'",
                crate::naming::printable(other)
            ));
        }
        let rule = match (obj.get("allOf"), obj.get("anyOf")) {
            (Some(all), None) => Condition::AllOf(self.conditions(list(all, "allOf")?, 1)?),
            (None, Some(any)) => Condition::AnyOf(self.conditions(list(any, "anyOf")?, 1)?),
            _ => {
                return Err(format!(
                    "authority '{authority}' needs exactly one of allOf and anyOf"
                ))
            }
        };
        Ok(Authority {
            authority: authority.to_owned(),
            rule,
        })
    }
}

impl ReleasePolicy {
    /// Parses and checks a policy document (the decoded `data` of a `release_policy`).
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if data.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "the policy is larger than {MAX_POLICY_BYTES} bytes"
            ));
        }
        let doc: Value =
            serde_json::from_slice(data).map_err(|_| "the policy is not a JSON document")?;
        let root = doc.as_object().ok_or("the policy must be a JSON object")?;
        match root.get("version") {
            None => {}
            Some(Value::String(v)) if v == POLICY_VERSION || v == "1.0" => {}
            Some(_) => {
                return Err(format!(
                    "the policy version must be {POLICY_VERSION}, the only version of the grammar"
                ))
            }
        }
        if root.contains_key("allOf") {
            return Err(
                "the root of a policy is anyOf over authorities; a root allOf is not valid".into(),
            );
        }
        if let Some(other) = root
            .keys()
            .find(|k| !matches!(k.as_str(), "version" | "anyOf"))
        {
            return Err(format!(
                "unknown member '{}' at the root of the policy",
                crate::naming::printable(other)
            ));
        }
        let any = root
            .get("anyOf")
            .ok_or("the policy needs a root anyOf listing its authorities")?;
        let mut parser = Parser { conditions: 0 };
        let authorities = list(any, "anyOf")?
            .iter()
            .map(|a| parser.authority(a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReleasePolicy { authorities })
    }

    /// The policy's normal form: version 1.0.0 and the members of the grammar in a fixed order,
    /// values with the JSON types they were given.
    pub fn to_json(&self) -> Value {
        fn condition(c: &Condition) -> Value {
            match c {
                Condition::AllOf(items) => {
                    serde_json::json!({"allOf": items.iter().map(condition).collect::<Vec<_>>()})
                }
                Condition::AnyOf(items) => {
                    serde_json::json!({"anyOf": items.iter().map(condition).collect::<Vec<_>>()})
                }
                Condition::Claim {
                    claim,
                    operator,
                    value,
                } => {
                    let mut m = Map::new();
                    m.insert("claim".into(), Value::String(claim.clone()));
                    m.insert(operator.name().into(), value.clone());
                    Value::Object(m)
                }
            }
        }
        let authorities: Vec<Value> = self
            .authorities
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert("authority".into(), Value::String(a.authority.clone()));
                let (key, items): (&str, &[Condition]) = match &a.rule {
                    Condition::AllOf(items) => ("allOf", items),
                    Condition::AnyOf(items) => ("anyOf", items),
                    Condition::Claim { .. } => ("allOf", std::slice::from_ref(&a.rule)),
                };
                m.insert(
                    key.into(),
                    Value::Array(items.iter().map(condition).collect()),
                );
                Value::Object(m)
            })
            .collect();
        serde_json::json!({"version": POLICY_VERSION, "anyOf": authorities})
    }

    /// The authorities whose issuer is `iss` (compared after trimming one trailing `/`).
    pub fn authorities_for<'a>(&'a self, iss: &'a str) -> impl Iterator<Item = &'a Authority> {
        let iss = normalize_authority(iss);
        self.authorities
            .iter()
            .filter(move |a| normalize_authority(&a.authority) == iss)
    }

    /// Whether the claims of a verified token of issuer `iss` satisfy the policy: some authority
    /// for `iss` whose rule holds.
    pub fn allows(&self, iss: &str, claims: &Map<String, Value>) -> bool {
        self.authorities_for(iss).any(|a| evaluate(&a.rule, claims))
    }
}

/// The claim at a dot path; a top-level claim whose name itself holds dots is found too.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut current = claims.get(first);
    for part in parts {
        current = current
            .and_then(|v| v.as_object())
            .and_then(|o| o.get(part));
    }
    current.or_else(|| claims.get(path))
}

/// Canonical text of a scalar: strings as they are, booleans `true`/`false`, numbers in their
/// shortest form (an integral float as an integer).
fn canonical(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else if let Some(u) = n.as_u64() {
                Some(u.to_string())
            } else {
                let f = n.as_f64()?;
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Some(format!("{}", f as i64))
                } else {
                    Some(f.to_string())
                }
            }
        }
        _ => None,
    }
}

fn numeric(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s)
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+')) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Evaluates a condition over a token's claims.
pub fn evaluate(condition: &Condition, claims: &Map<String, Value>) -> bool {
    match condition {
        Condition::AllOf(items) => items.iter().all(|c| evaluate(c, claims)),
        Condition::AnyOf(items) => items.iter().any(|c| evaluate(c, claims)),
        Condition::Claim {
            claim,
            operator,
            value,
        } => {
            let found = lookup(claims, claim);
            if *operator == Operator::Exists {
                return found.is_some() == value.as_bool().unwrap_or(true);
            }
            let Some(found) = found else { return false };
            match operator {
                Operator::Equals | Operator::NotEquals => {
                    match (canonical(found), canonical(value)) {
                        (Some(a), Some(b)) => (a == b) == (*operator == Operator::Equals),
                        _ => false,
                    }
                }
                _ => {
                    let (Some(a), Some(b)) = (numeric(found), numeric(value)) else {
                        return false;
                    };
                    match operator {
                        Operator::Less => a < b,
                        Operator::LessOrEquals => a <= b,
                        Operator::Greater => a > b,
                        _ => a >= b,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn policy(v: Value) -> Result<ReleasePolicy, String> {
        ReleasePolicy::parse(&serde_json::to_vec(&v).unwrap())
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sample_policy_parses_normalises_and_evaluates() {
        let p = policy(
            json!({"version": "1.0", "anyOf": [{"authority": "https://attest.test/",
            "anyOf": [{"claim": "sdk-test", "equals": true}]}]}),
        )
        .unwrap();
        assert_eq!(
            p.to_json(),
            json!({"version": "1.0.0", "anyOf": [{"authority": "https://attest.test/",
                "anyOf": [{"claim": "sdk-test", "equals": true}]}]})
        );
        let good = claims(json!({"sdk-test": true}));
        assert!(p.allows("https://attest.test", &good));
        assert!(p.allows("https://attest.test/", &good));
        assert!(!p.allows("https://attest.test//", &good));
        assert!(!p.allows("https://other.test/", &good));
        // Canonical text: "true" (KV's stringified form) equals true.
        assert!(p.allows("https://attest.test/", &claims(json!({"sdk-test": "true"}))));
        assert!(!p.allows("https://attest.test/", &claims(json!({"sdk-test": false}))));
        assert!(!p.allows("https://attest.test/", &claims(json!({}))));
        assert!(!p.allows(
            "https://attest.test/",
            &claims(json!({"sdk-test": {"a": 1}}))
        ));
    }

    #[test]
    fn cvm_policy_without_version_nests_conditions() {
        let p = policy(json!({"anyOf": [{"authority": "https://sharedweu.weu.attest.azure.net",
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
                {"anyOf": [
                    {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                    {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "tdxvm"}]}]}]}))
        .unwrap();
        let iss = "https://sharedweu.weu.attest.azure.net/";
        let tee = |t: &str, c: &str| {
            claims(
                json!({"x-ms-isolation-tee": {"x-ms-attestation-type": t, "x-ms-compliance-status": c}}),
            )
        };
        assert!(p.allows(iss, &tee("sevsnpvm", "azure-compliant-cvm")));
        assert!(p.allows(iss, &tee("tdxvm", "azure-compliant-cvm")));
        assert!(!p.allows(iss, &tee("sgx", "azure-compliant-cvm")));
        assert!(!p.allows(iss, &tee("sevsnpvm", "azure-compliant-uvm")));
        // The same claims at the top level are not the nested ones.
        assert!(!p.allows(
            iss,
            &claims(json!({"x-ms-attestation-type": "sevsnpvm", "x-ms-compliance-status": "azure-compliant-cvm"}))
        ));
    }

    #[test]
    fn every_operator() {
        let cond = |op: &str, v: Value| {
            let p = policy(
                json!({"anyOf": [{"authority": "https://a", "allOf": [{"claim": "svn", op: v}]}]}),
            )
            .unwrap();
            p.authorities[0].rule.clone()
        };
        let c = claims(json!({"svn": 5, "name": "x"}));
        let holds = |op: &str, v: Value| evaluate(&cond(op, v), &c);
        assert!(holds("equals", json!(5)));
        assert!(holds("equals", json!("5")));
        assert!(holds("equals", json!(5.0)));
        assert!(!holds("equals", json!(6)));
        assert!(holds("notEquals", json!(6)));
        assert!(!holds("notEquals", json!(5)));
        assert!(holds("greater", json!(1)));
        assert!(holds("greater", json!("4")));
        assert!(!holds("greater", json!(5)));
        assert!(holds("greaterOrEquals", json!(5)));
        assert!(holds("less", json!(6)));
        assert!(!holds("less", json!(5)));
        assert!(holds("lessOrEquals", json!(5)));
        assert!(holds("exists", json!(true)));
        assert!(!holds("exists", json!(false)));
        // Ordering against a non-number is false, not an error.
        assert!(!evaluate(&cond("greater", json!("abc")), &c));
        let absent = claims(json!({}));
        for (op, v) in [
            ("equals", json!(5)),
            ("notEquals", json!(5)),
            ("greater", json!(1)),
            ("exists", json!(true)),
        ] {
            assert!(
                !evaluate(&cond(op, v.clone()), &absent),
                "{op} on an absent claim"
            );
        }
        assert!(evaluate(&cond("exists", json!(false)), &absent));
    }

    #[test]
    fn grammar_violations_are_refused() {
        let a = |rule: Value| json!({"anyOf": [{"authority": "https://a", "allOf": [rule]}]});
        for bad in [
            json!([]),
            json!("policy"),
            json!({"version": "2.0", "anyOf": [{"authority": "https://a", "allOf": [{"claim": "c", "equals": 1}]}]}),
            json!({"allOf": [{"authority": "https://a", "allOf": [{"claim": "c", "equals": 1}]}]}),
            json!({"anyOf": []}),
            json!({"version": "1.0.0"}),
            json!({"anyOf": [{"authority": "https://a", "allOf": [{"claim": "c", "equals": 1}]}], "extra": 1}),
            json!({"anyOf": [{"allOf": [{"claim": "c", "equals": 1}]}]}),
            json!({"anyOf": [{"authority": "", "allOf": [{"claim": "c", "equals": 1}]}]}),
            json!({"anyOf": [{"authority": "https://a"}]}),
            json!({"anyOf": [{"authority": "https://a", "allOf": [{"claim": "c", "equals": 1}], "anyOf": [{"claim": "c", "equals": 1}]}]}),
            a(json!({"claim": "c"})),
            a(json!({"claim": "c", "equals": 1, "notEquals": 2})),
            a(json!({"claim": "c", "like": 1})),
            a(json!({"claim": "c", "equals": {"a": 1}})),
            a(json!({"claim": "c", "equals": [1]})),
            a(json!({"claim": "c", "equals": null})),
            a(json!({"claim": "c", "exists": "yes"})),
            a(json!({"claim": "", "equals": 1})),
            a(json!({"claim": 5, "equals": 1})),
            a(json!({"allOf": []})),
            a(
                json!({"allOf": [{"claim": "c", "equals": 1}], "anyOf": [{"claim": "c", "equals": 1}]}),
            ),
            a(json!({})),
            a(json!(7)),
        ] {
            assert!(policy(bad.clone()).is_err(), "accepted {bad}");
        }
        assert!(ReleasePolicy::parse(b"not json").is_err());
        assert!(ReleasePolicy::parse(&vec![b' '; MAX_POLICY_BYTES + 1]).is_err());
        // Nesting beyond the limit.
        let mut deep = json!({"claim": "c", "equals": 1});
        for _ in 0..40 {
            deep = json!({"allOf": [deep]});
        }
        assert!(policy(a(deep)).is_err());
    }
}
