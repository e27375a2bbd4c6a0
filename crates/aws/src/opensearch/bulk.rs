//! Bulk responses: `{"took":…,"errors":bool,"items":[{"create":{"status":201,…}},…]}`, one
//! item per action in request order, and what each item's status means for delivery.

use serde::Deserialize;

/// How one item fared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (2xx).
    Stored,
    /// `create` of an `_id` that exists (409): an earlier attempt stored it.
    Exists,
    /// Refused for now (429, 5xx): send it again.
    Retry(String),
    /// Refused for good (mapping errors and other 4xx), with the node's reason.
    Rejected(String),
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::BTreeMap<String, ItemBody>>,
}

/// What an item says: its status, and its error when it failed (`_index`, `_id`, `result` and
/// the rest are skipped, not built).
#[derive(Deserialize)]
struct ItemBody {
    #[serde(default)]
    status: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// `type: reason` of an item's `error` (a string or an object).
fn reason(status: u16, error: Option<&serde_json::Value>) -> String {
    match error {
        Some(serde_json::Value::Object(e)) => {
            let t = e.get("type").and_then(|v| v.as_str()).unwrap_or("error");
            let r = e.get("reason").and_then(|v| v.as_str()).unwrap_or("");
            let caused = e
                .get("caused_by")
                .and_then(|c| c.get("reason"))
                .and_then(|v| v.as_str());
            match caused {
                Some(c) => format!("{status} {t}: {r} ({c})"),
                None => format!("{status} {t}: {r}"),
            }
        }
        Some(serde_json::Value::String(s)) => format!("{status} {s}"),
        _ => format!("status {status}"),
    }
}

/// The outcome of each of `n` items from a 2xx answer's body; `Err` when the body is not a
/// bulk answer for `n` items. An answer that starts by saying `"errors":false` stored every
/// item, as Fluent Bit reads it, and its items are not read.
pub fn outcomes(body: &[u8], n: usize) -> Result<Vec<Outcome>, String> {
    if says_no_errors(body) {
        return Ok(vec![Outcome::Stored; n]);
    }
    let parsed: Body =
        serde_json::from_slice(body).map_err(|e| format!("the bulk answer is not JSON: {e}"))?;
    if !parsed.errors && parsed.items.is_empty() {
        // Some proxies and `filter_path` answers leave the items out when all went well.
        return Ok(vec![Outcome::Stored; n]);
    }
    if parsed.items.len() != n {
        return Err(format!(
            "the bulk answer has {} items for {n} actions",
            parsed.items.len()
        ));
    }
    Ok(parsed
        .items
        .iter()
        .map(|it| {
            let Some((action, v)) = it.iter().next() else {
                return Outcome::Retry("an empty item in the bulk answer".into());
            };
            let status = v.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
            match status {
                200..=299 => Outcome::Stored,
                409 if action == "create" => Outcome::Exists,
                429 | 500..=599 | 0 => Outcome::Retry(reason(status, v.error.as_ref())),
                _ => Outcome::Rejected(reason(status, v.error.as_ref())),
            }
        })
        .collect())
}

/// Whether the start of a (cut) answer says that no item failed: `"errors":false` comes
/// before the items in OpenSearch's and Elasticsearch's answers.
pub fn says_no_errors(head: &[u8]) -> bool {
    let head = &head[..head.len().min(256)];
    let text: String = String::from_utf8_lossy(head)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    text.contains("\"errors\":false")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_item_status_means_stored_exists_retry_or_rejected() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"a","status":201}},
            {"create":{"_index":"a","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_index":"a","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_index":"a","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [level]","caused_by":{"type":"x","reason":"not a number"}}}},
            {"index":{"_index":"a","status":409,"error":{"type":"version_conflict_engine_exception","reason":"v"}}},
            {"update":{"_index":"a","status":503}}
        ]}"#;
        let o = outcomes(body, 6).unwrap();
        assert_eq!(o[0], Outcome::Stored);
        assert_eq!(o[1], Outcome::Exists);
        assert!(
            matches!(&o[2], Outcome::Retry(r) if r.contains("es_rejected_execution_exception"))
        );
        assert!(
            matches!(&o[3], Outcome::Rejected(r) if r == "400 mapper_parsing_exception: failed to parse field [level] (not a number)")
        );
        // 409 of an `index` action is a real conflict, not a duplicate.
        assert!(matches!(&o[4], Outcome::Rejected(_)));
        assert!(matches!(&o[5], Outcome::Retry(_)));
    }

    #[test]
    fn answers_that_do_not_match_the_request_are_errors() {
        assert!(outcomes(b"<html>", 1).is_err());
        assert!(outcomes(br#"{"errors":true,"items":[]}"#, 2).is_err());
        assert_eq!(
            outcomes(br#"{"errors":false}"#, 2).unwrap(),
            vec![Outcome::Stored, Outcome::Stored]
        );
    }

    /// `"errors":false` at the start says every item was stored: the items are not read (a
    /// large answer costs no parsing), as Fluent Bit reads the answer.
    #[test]
    fn an_answer_without_errors_is_not_read_item_by_item() {
        let body = br#"{"took":1,"errors":false,"items":[{"create":{"status":201}},{"cr"#;
        assert_eq!(outcomes(body, 3).unwrap(), vec![Outcome::Stored; 3]);
        // The same answer saying errors is read, and refused as not JSON.
        let body = br#"{"took":1,"errors":true,"items":[{"create":{"status":201}},{"cr"#;
        assert!(outcomes(body, 3).is_err());
    }

    #[test]
    fn a_cut_answer_tells_only_whether_nothing_failed() {
        assert!(says_no_errors(
            br#"{"took":30, "errors": false, "items":[{"cr"#
        ));
        assert!(!says_no_errors(
            br#"{"took":30,"errors":true,"items":[{"cr"#
        ));
    }
}
