//! Checks every JSON response the tests receive against the Matrix specification's OpenAPI
//! description of that endpoint and status (the spec's files are vendored under `tests/spec`).
//!
//! The request's method and path pick the operation; the response's status picks the schema.
//! A documented status is validated against its schema (`$ref`s inlined, across files); an
//! error status the endpoint does not document must still be a standard Matrix error
//! (`errcode` and `error` strings), as the spec allows any endpoint its common errors; a
//! success status the endpoint does not document is a violation. Paths the client-server spec
//! does not describe are Hearth's own or unstable (named in [`EXEMPT_PREFIXES`]) and are not
//! checked; any other unknown path may only answer 404 or 405 `M_UNRECOGNIZED`.
//!
//! A violation panics in the request helper, so every test, existing or future, checks the
//! shape of what it receives.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::{Map, Value};

/// Paths outside the client-server spec: Hearth's own, Synapse's admin API, unstable MSCs,
/// other APIs (federation, keys, media served as bytes).
const EXEMPT_PREFIXES: &[&str] = &[
    "/_synapse/",
    "/_matrix/client/unstable/",
    "/_matrix/federation/",
    "/_matrix/key/",
    "/.well-known/matrix/server",
    "/health",
    "/metrics",
];

/// Known, deliberate departures from the schema, each with its reason.
const ALLOWED: &[(&str, &str, &str)] = &[
    // Synapse answers `null` for an unset display name or avatar, conformance suites check both
    // keys exist, and clients (matrix-nio's schema among them) accept the null.
    ("GET", "/_matrix/client/v3/rooms/{roomId}/joined_members", "/joined/"),
];

struct Operation {
    method: String,
    segments: Vec<String>,
    template: String,
    responses: Value,
    file: PathBuf,
}

/// A compiled response schema (None: the status has no JSON body documented), by method,
/// template and status.
type Validators = HashMap<(String, String, u16), Arc<Option<jsonschema::Validator>>>;

struct Spec {
    operations: Vec<Operation>,
    files: Mutex<HashMap<PathBuf, Arc<Value>>>,
    validators: Mutex<Validators>,
}

fn spec_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec")
}

fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = spec_root().join("api/client-server");
        let mut operations = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("tests/spec/api/client-server")
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        entries.sort();
        for file in entries {
            let doc = load_yaml(&file);
            let base = doc["servers"][0]["variables"]["basePath"]["default"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let Some(paths) = doc["paths"].as_object() else {
                continue;
            };
            for (path, item) in paths {
                let Some(item) = item.as_object() else { continue };
                for (method, operation) in item {
                    if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                        continue;
                    }
                    let template = format!("{base}{path}");
                    operations.push(Operation {
                        method: method.to_uppercase(),
                        segments: template.split('/').map(str::to_owned).collect(),
                        template,
                        responses: operation["responses"].clone(),
                        file: file.clone(),
                    });
                }
            }
        }
        Spec {
            operations,
            files: Mutex::new(HashMap::new()),
            validators: Mutex::new(HashMap::new()),
        }
    })
}

impl Spec {
    fn file(&self, path: &Path) -> Arc<Value> {
        let path = normalise(path);
        let mut files = self.files.lock().unwrap();
        files
            .entry(path.clone())
            .or_insert_with(|| Arc::new(load_yaml(&path)))
            .clone()
    }

    /// The operation whose template matches: literal segments first (`/keys/query` before
    /// `/keys/{x}`), so the most specific template wins.
    fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(&Operation, usize)> = None;
        for operation in &self.operations {
            if operation.method != method {
                continue;
            }
            // A trailing parameter (the empty state key) may be left out with its slash.
            let template = match operation.segments.len().checked_sub(segments.len()) {
                Some(0) => &operation.segments[..],
                Some(1) if operation.segments.last().is_some_and(|last| last.starts_with('{')) => {
                    &operation.segments[..segments.len()]
                }
                _ => continue,
            };
            let mut literals = 0;
            let matched = template.iter().zip(&segments).enumerate().all(|(i, (t, s))| {
                if t.starts_with('{') && t.ends_with('}') {
                    // A trailing parameter (a state key) may be empty.
                    !s.is_empty() || i == segments.len() - 1
                } else {
                    literals += 1;
                    t == s
                }
            });
            if matched && best.is_none_or(|(_, n)| literals > n) {
                best = Some((operation, literals));
            }
        }
        best.map(|(operation, _)| operation)
    }

    /// `value` with every `$ref` replaced by what it points to; `file` is the document `value`
    /// comes from (relative references resolve against it). A reference cycle resolves to `{}`.
    fn inline(&self, value: &Value, file: &Path, stack: &mut Vec<String>) -> Value {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(reference)) = object.get("$ref") {
                    let (target_file, pointer) = match reference.split_once('#') {
                        Some(("", pointer)) => (file.to_owned(), pointer.to_owned()),
                        Some((relative, pointer)) => (file.parent().unwrap().join(relative), pointer.to_owned()),
                        None => (file.parent().unwrap().join(reference), String::new()),
                    };
                    let target_file = normalise(&target_file);
                    let key = format!("{}#{pointer}", target_file.display());
                    if stack.contains(&key) {
                        return Value::Object(Map::new());
                    }
                    let doc = self.file(&target_file);
                    let target = doc
                        .pointer(&pointer)
                        .unwrap_or_else(|| panic!("unresolved $ref {reference} in {}", file.display()))
                        .clone();
                    stack.push(key);
                    let resolved = self.inline(&target, &target_file, stack);
                    stack.pop();
                    return resolved;
                }
                Value::Object(
                    object
                        .iter()
                        .filter(|(key, _)| !matches!(key.as_str(), "example" | "examples"))
                        // The spec's `oneOf`s are not all exclusive (a whole state event is also
                        // "an object of content"): read them as `anyOf`.
                        .map(|(key, value)| {
                            let key = if key == "oneOf" {
                                "anyOf".to_owned()
                            } else {
                                key.clone()
                            };
                            (key, self.inline(value, file, stack))
                        })
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.inline(v, file, stack)).collect()),
            other => other.clone(),
        }
    }

    /// The compiled schema of an operation's response with this status (None: no JSON body
    /// is documented for it).
    fn validator(&self, operation: &Operation, status: u16) -> Option<Arc<Option<jsonschema::Validator>>> {
        let responses = operation.responses.as_object()?;
        let response = responses.get(&status.to_string())?;
        let key = (operation.method.clone(), operation.template.clone(), status);
        if let Some(found) = self.validators.lock().unwrap().get(&key) {
            return Some(found.clone());
        }
        let response = self.inline(response, &operation.file, &mut Vec::new());
        let schema = response["content"]["application/json"]["schema"].clone();
        let validator = if schema.is_null() {
            None
        } else {
            Some(
                jsonschema::draft202012::new(&schema)
                    .unwrap_or_else(|e| panic!("schema of {} {} {status}: {e}", operation.method, operation.template)),
            )
        };
        let validator = Arc::new(validator);
        self.validators.lock().unwrap().insert(key, validator.clone());
        Some(validator)
    }
}

/// `a/b/../c` → `a/c` (so one file is loaded once, whatever path led to it).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Checks one response; panics with every violation found.
pub fn check(method: &str, url_path: &str, status: u16, body: &Value, is_json: bool) {
    let path = url_path.split('?').next().unwrap_or(url_path);
    // r0 is v3 under another name.
    let path = path.replacen("/_matrix/client/r0/", "/_matrix/client/v3/", 1);
    if EXEMPT_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
        return;
    }
    let spec = spec();
    let Some(operation) = spec.operation(method, &path) else {
        // Not an endpoint of the spec: only "unrecognized" may come back.
        let unrecognized = body["errcode"] == "M_UNRECOGNIZED" && matches!(status, 400 | 404 | 405);
        assert!(
            unrecognized,
            "{method} {path}: not in the client-server spec (add it to EXEMPT_PREFIXES if it is \
             Hearth's own), yet answered {status} {body}"
        );
        return;
    };
    // Any endpoint may answer the common errors: a missing or unknown token (even where its
    // documented 401 is the user-interactive auth body), and user-interactive auth itself.
    if status == 401 {
        if body["flows"].is_array() {
            assert!(
                body["params"].is_object() && body.get("session").is_none_or(Value::is_string),
                "{method} {path}: a user-interactive auth 401 needs `params` (and a string session): {body}"
            );
            return;
        }
        if matches!(body["errcode"].as_str(), Some("M_MISSING_TOKEN" | "M_UNKNOWN_TOKEN")) {
            assert!(body["error"].is_string(), "{method} {path}: {body}");
            return;
        }
    }
    // Every other error is a standard Matrix error, whatever else its schema adds.
    if status >= 400 {
        assert!(
            body["errcode"].is_string() && body["error"].is_string(),
            "{method} {path}: an error ({status}) must be a Matrix error, got {body}"
        );
    }
    let documented = spec.validator(operation, status);
    match documented.as_deref() {
        Some(Some(validator)) => {
            if !is_json {
                return; // Media and other byte bodies.
            }
            let allowed: Vec<&str> = ALLOWED
                .iter()
                .filter(|(m, t, _)| *m == method && *t == operation.template)
                .map(|(_, _, pointer)| *pointer)
                .collect();
            let errors: Vec<String> = validator
                .iter_errors(body)
                .filter(|error| {
                    let at = error.instance_path().to_string();
                    !allowed.iter().any(|prefix| at.starts_with(prefix))
                })
                .map(|error| format!("at {}: {error}", error.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {path} ({}) answered {status} against the spec's schema:\n  {}\nbody: {body}",
                operation.template,
                errors.join("\n  ")
            );
        }
        Some(None) => {}
        None if status >= 400 => {}
        None => panic!(
            "{method} {path} ({}) answered {status}, a status the spec does not document for it: {body}",
            operation.template
        ),
    }
}

/// What is wrong with a body Hearth sent to a push gateway, against the push gateway spec's
/// `POST /_matrix/push/v1/notify` request schema (empty: nothing).
pub fn push_notification_violations(body: &Value) -> Vec<String> {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let file = spec_root().join("api/push-gateway/push_notifier.yaml");
        let doc = load_yaml(&file);
        let schema = &doc["paths"]["/notify"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        let schema = spec().inline(schema, &file, &mut Vec::new());
        jsonschema::draft202012::new(&schema).expect("push gateway schema compiles")
    });
    validator
        .iter_errors(body)
        .map(|error| format!("at {}: {error}", error.instance_path()))
        .collect()
}
