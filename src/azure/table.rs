//! A small Azure Table Storage client on `azure_core`'s pipeline (there is no
//! 1.x Table crate). It gets the SDK's retry and log-sanitising policies, a
//! bearer-token policy for Entra auth, and SAS-in-URL for Azurite.
//!
//! Entities are JSON objects (`odata=nometadata`): every property meetbot
//! stores is a string, a bool or a 32-bit integer, which need no type
//! annotations. Keys are escaped for OData literals; callers pass validated
//! ids anyway.

use std::sync::Arc;

use azure_core::http::headers::{HeaderName, ETAG};
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::policies::Policy;
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineSendOptions, RawResponse, Request, Url,
};
use serde_json::{Map, Value};

use super::{AzureAuth, STORAGE_SCOPE};

/// Why a table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The entity (or table) does not exist.
    #[error("not found")]
    NotFound,
    /// Insert of an entity that exists.
    #[error("entity already exists")]
    AlreadyExists,
    /// `If-Match` failed: someone else updated the entity.
    #[error("entity changed concurrently (etag mismatch)")]
    PreconditionFailed,
    /// Worth retrying: connection failures, timeouts, throttling, 5xx.
    #[error("table storage unavailable: {0}")]
    Transient(String),
    /// Anything else (bad request, forbidden, unparseable response).
    #[error("table storage: {0}")]
    Other(String),
}

impl TableError {
    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, TableError::Transient(_))
    }
}

/// An entity with its ETag.
#[derive(Debug, Clone)]
pub struct Entity {
    /// Properties, including `PartitionKey`, `RowKey` and `Timestamp`.
    pub props: Map<String, Value>,
    /// For optimistic concurrency (`If-Match`).
    pub etag: String,
}

/// A Table service client (one account).
#[derive(Clone)]
pub struct TableClient {
    base: Url,
    pipeline: Arc<Pipeline>,
}

impl std::fmt::Debug for TableClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableClient")
            .field("endpoint", &super::display_url(&self.base))
            .finish_non_exhaustive()
    }
}

fn key_literal(k: &str) -> String {
    format!("'{}'", k.replace('\'', "''"))
}

impl TableClient {
    /// `base` is the service URL from [`super::service_url`] (SAS already in
    /// its query when `auth` is a SAS).
    pub fn new(base: Url, auth: &AzureAuth, options: ClientOptions) -> Self {
        let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
        if let AzureAuth::Token(cred) = auth {
            per_try.push(Arc::new(BearerTokenAuthorizationPolicy::new(
                cred.clone(),
                [STORAGE_SCOPE],
            )));
        }
        let pipeline = Pipeline::new(
            Some("meetbot"),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            per_try,
            None,
        );
        TableClient {
            base,
            pipeline: Arc::new(pipeline),
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut u = self.base.clone();
        let p = format!("{}/{}", u.path().trim_end_matches('/'), path);
        u.set_path(&p);
        if !query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        u
    }

    fn request(&self, method: Method, url: Url) -> Request {
        let mut r = Request::new(url, method);
        r.insert_header("x-ms-version", "2019-02-02");
        r.insert_header("accept", "application/json;odata=nometadata");
        r.insert_header("dataserviceversion", "3.0");
        r.insert_header("maxdataserviceversion", "3.0;NetFx");
        r
    }

    async fn send(&self, mut req: Request) -> Result<RawResponse, TableError> {
        let opts = PipelineSendOptions {
            skip_checks: true,
            ..Default::default()
        };
        match self
            .pipeline
            .send(&Context::new(), &mut req, Some(opts))
            .await
        {
            Ok(r) => Ok(r),
            Err(e) if super::is_transient(&e) => Err(TableError::Transient(e.to_string())),
            Err(e) => Err(TableError::Other(e.to_string())),
        }
    }

    fn classify(rsp: &RawResponse) -> TableError {
        let status = u16::from(rsp.status());
        let code = rsp
            .headers()
            .get_optional_str(&HeaderName::from_static("x-ms-error-code"))
            .unwrap_or("")
            .to_string();
        match (status, code.as_str()) {
            (404, _) => TableError::NotFound,
            (409, "EntityAlreadyExists") => TableError::AlreadyExists,
            (412, _) => TableError::PreconditionFailed,
            (408 | 429, _) | (500.., _) => TableError::Transient(format!("HTTP {status} {code}")),
            _ => TableError::Other(format!("HTTP {status} {code}")),
        }
    }

    fn entity_path(table: &str, pk: &str, rk: &str) -> String {
        format!(
            "{table}(PartitionKey={},RowKey={})",
            key_literal(pk),
            key_literal(rk)
        )
    }

    /// Creates `table` if it does not exist.
    pub async fn create_table(&self, table: &str) -> Result<(), TableError> {
        let mut req = self.request(Method::Post, self.url("Tables", &[]));
        req.insert_header("content-type", "application/json");
        req.insert_header("prefer", "return-no-content");
        req.set_json(&serde_json::json!({ "TableName": table }))
            .map_err(|e| TableError::Other(e.to_string()))?;
        let rsp = self.send(req).await?;
        match u16::from(rsp.status()) {
            200..=299 | 409 => Ok(()),
            _ => Err(Self::classify(&rsp)),
        }
    }

    /// Whether the service answers (for readiness probes).
    pub async fn ping(&self, table: &str) -> Result<(), TableError> {
        let mut req = self.request(
            Method::Get,
            self.url(&format!("{table}()"), &[("$top", "1")]),
        );
        req.insert_header("accept", "application/json;odata=nometadata");
        let rsp = self.send(req).await?;
        if rsp.status().is_success() {
            Ok(())
        } else {
            Err(Self::classify(&rsp))
        }
    }

    /// Inserts a new entity; [`TableError::AlreadyExists`] if it exists.
    /// Returns the new ETag.
    pub async fn insert(
        &self,
        table: &str,
        pk: &str,
        rk: &str,
        props: &Map<String, Value>,
    ) -> Result<String, TableError> {
        let mut body = props.clone();
        body.insert("PartitionKey".into(), pk.into());
        body.insert("RowKey".into(), rk.into());
        let mut req = self.request(Method::Post, self.url(table, &[]));
        req.insert_header("content-type", "application/json");
        req.insert_header("prefer", "return-no-content");
        req.set_json(&Value::Object(body))
            .map_err(|e| TableError::Other(e.to_string()))?;
        let rsp = self.send(req).await?;
        if rsp.status().is_success() {
            Ok(etag(&rsp))
        } else {
            Err(Self::classify(&rsp))
        }
    }

    /// Reads one entity; `None` if it does not exist.
    pub async fn get(&self, table: &str, pk: &str, rk: &str) -> Result<Option<Entity>, TableError> {
        let req = self.request(
            Method::Get,
            self.url(&Self::entity_path(table, pk, rk), &[]),
        );
        let rsp = self.send(req).await?;
        match u16::from(rsp.status()) {
            200 => {
                let etag = etag(&rsp);
                let props: Map<String, Value> = serde_json::from_slice(rsp.body())
                    .map_err(|e| TableError::Other(format!("entity is not a JSON object: {e}")))?;
                Ok(Some(Entity { props, etag }))
            }
            404 => Ok(None),
            _ => Err(Self::classify(&rsp)),
        }
    }

    /// Merges `patch` into an existing entity. `if_match` is an ETag or `*`
    /// (any version, but it must exist). Returns the new ETag.
    pub async fn merge(
        &self,
        table: &str,
        pk: &str,
        rk: &str,
        patch: &Map<String, Value>,
        if_match: &str,
    ) -> Result<String, TableError> {
        let mut req = self.request(
            Method::Patch,
            self.url(&Self::entity_path(table, pk, rk), &[]),
        );
        req.insert_header("content-type", "application/json");
        req.insert_header("if-match", if_match.to_string());
        req.set_json(&Value::Object(patch.clone()))
            .map_err(|e| TableError::Other(e.to_string()))?;
        let rsp = self.send(req).await?;
        if rsp.status().is_success() {
            Ok(etag(&rsp))
        } else {
            Err(Self::classify(&rsp))
        }
    }

    /// Deletes an entity (`if_match` an ETag or `*`); a missing entity is not an error.
    pub async fn delete(
        &self,
        table: &str,
        pk: &str,
        rk: &str,
        if_match: &str,
    ) -> Result<(), TableError> {
        let mut req = self.request(
            Method::Delete,
            self.url(&Self::entity_path(table, pk, rk), &[]),
        );
        req.insert_header("if-match", if_match.to_string());
        let rsp = self.send(req).await?;
        match u16::from(rsp.status()) {
            200..=299 | 404 => Ok(()),
            _ => Err(Self::classify(&rsp)),
        }
    }

    /// Entities of one partition, newest-first order is not guaranteed (the
    /// service orders by RowKey). Only RowKeys below `rk_below` when given.
    /// Reads at most `limit` entities, following continuation tokens.
    pub async fn query_partition(
        &self,
        table: &str,
        pk: &str,
        rk_below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, TableError> {
        let mut filter = format!("PartitionKey eq {}", key_literal(pk));
        if let Some(below) = rk_below {
            filter.push_str(&format!(" and RowKey lt {}", key_literal(below)));
        }
        let mut out = Vec::new();
        let mut next: Option<(String, String)> = None;
        loop {
            let top = (limit - out.len()).clamp(1, 1000).to_string();
            let mut q: Vec<(&str, &str)> = vec![("$filter", &filter), ("$top", &top)];
            if let Some((npk, nrk)) = &next {
                q.push(("NextPartitionKey", npk));
                q.push(("NextRowKey", nrk));
            }
            let req = self.request(Method::Get, self.url(&format!("{table}()"), &q));
            let rsp = self.send(req).await?;
            if !rsp.status().is_success() {
                return Err(Self::classify(&rsp));
            }
            #[derive(serde::Deserialize)]
            struct Page {
                value: Vec<Map<String, Value>>,
            }
            let page: Page = serde_json::from_slice(rsp.body())
                .map_err(|e| TableError::Other(format!("query response: {e}")))?;
            out.extend(page.value);
            let h = rsp.headers();
            let npk = h.get_optional_string(&HeaderName::from_static(
                "x-ms-continuation-nextpartitionkey",
            ));
            let nrk =
                h.get_optional_string(&HeaderName::from_static("x-ms-continuation-nextrowkey"));
            match (npk, nrk) {
                (Some(a), Some(b)) if out.len() < limit => next = Some((a, b)),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

fn etag(rsp: &RawResponse) -> String {
    rsp.headers()
        .get_optional_string(&ETAG)
        .unwrap_or_else(|| "*".into())
}
