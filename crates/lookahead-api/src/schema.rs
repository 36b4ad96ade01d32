//! Schema transforms for what `schemars` attributes cannot express directly but a Kubernetes
//! structural schema can: `oneOf` over required fields and CEL rules (enforced by servers
//! >= 1.25; older servers ignore them and the operator validates the same rules).

use schemars::Schema;
use serde_json::{json, Value};

/// `endpoint` xor `template` on a pool member.
pub(crate) fn endpoint_xor_template(schema: &mut Schema) {
    schema.insert(
        "oneOf".into(),
        json!([{ "required": ["endpoint"] }, { "required": ["template"] }]),
    );
}

/// `configMapRef` xor `secretRef` on a CA bundle source.
pub(crate) fn config_map_xor_secret(schema: &mut Schema) {
    schema.insert(
        "oneOf".into(),
        json!([{ "required": ["configMapRef"] }, { "required": ["secretRef"] }]),
    );
}

/// `min <= max` on a replica range.
pub(crate) fn replicas_min_le_max(schema: &mut Schema) {
    add_cel(
        schema,
        "self.min <= self.max",
        "replicas.min must be <= replicas.max",
    );
}

fn add_cel(schema: &mut Schema, rule: &str, message: &str) {
    let entry = json!({ "rule": rule, "message": message });
    match schema.get_mut("x-kubernetes-validations") {
        Some(Value::Array(rules)) => rules.push(entry),
        _ => {
            schema.insert("x-kubernetes-validations".into(), Value::Array(vec![entry]));
        }
    }
}

/// Optional enums render as `enum: [..., null]`, which kubectl's client-side validation rejects;
/// `nullable: true` already admits the null.
pub(crate) fn strip_null_from_enums(schema: &mut Schema) {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|x| !x.is_null());
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(obj) = schema.as_object_mut() {
        obj.values_mut().for_each(walk);
    }
}
