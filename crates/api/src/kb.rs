//! The caller's tenant documents in the knowledge base: list (any key), upload and remove (admin
//! keys). Uploads are raw bodies, so `curl --data-binary @guide.md` works as is; the knowledge
//! base decides whether the bytes are Markdown, text or HTML.

use axum::extract::Request;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use etl_kb::{DocumentInfo, KbError, KbErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::{Auth, read_body};
use crate::error::{ApiError, ErrorBody};

/// One document of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Document {
    /// The name it was uploaded under (the path after `/kb/documents/`).
    pub name: String,
    /// The first heading, the HTML title, or the file name.
    pub title: String,
    /// `markdown`, `text` or `html`.
    pub format: String,
    pub bytes: u64,
    /// How many searchable passages it was split into.
    pub passages: u64,
    /// SHA-256 of the content, hex.
    pub content_hash: String,
    pub indexed_at: DateTime<Utc>,
}

impl From<DocumentInfo> for Document {
    fn from(d: DocumentInfo) -> Document {
        Document {
            name: d.name,
            title: d.title,
            format: d.format.as_str().to_string(),
            bytes: d.bytes,
            passages: d.passages,
            content_hash: d.content_hash,
            indexed_at: d.indexed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    pub success: bool,
    pub documents: Vec<Document>,
    pub count: usize,
    /// Bundled documentation pages, searched for every tenant besides these.
    pub bundled: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentAdded {
    pub success: bool,
    pub document: Document,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentRemoved {
    pub success: bool,
    pub removed: String,
}

fn kb_error(doing: &str, e: KbError) -> ApiError {
    match e.kind() {
        KbErrorKind::InvalidInput => ApiError::bad_request(e.to_string()),
        KbErrorKind::TooLarge => ApiError::payload_too_large(e.to_string()),
        KbErrorKind::Busy => ApiError::unavailable(e.to_string()),
        KbErrorKind::Internal => ApiError::internal(doing, e),
    }
}

/// Runs a blocking knowledge-base call off the async threads (tantivy reads and writes files).
async fn blocking<T: Send + 'static>(
    doing: &'static str,
    f: impl FnOnce() -> Result<T, KbError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(doing, e))?
        .map_err(|e| kb_error(doing, e))
}

/// List the caller's tenant documents.
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/kb/documents",
    tag = "knowledge base",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's documents by name", body = DocumentList),
        (status = 401, description = "No usable key", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    auth: Auth,
) -> Result<axum::Json<DocumentList>, ApiError> {
    let kb = state.library().kb.clone();
    let tenant = auth.key.tenant.clone();
    let (docs, bundled) = blocking("listing the knowledge-base documents", move || {
        Ok((kb.list_documents(&tenant)?, kb.list_bundled()?.len()))
    })
    .await?;
    let documents: Vec<Document> = docs.into_iter().map(Document::from).collect();
    Ok(axum::Json(DocumentList {
        success: true,
        count: documents.len(),
        documents,
        bundled,
    }))
}

/// Add or replace a document of the caller's tenant (admin). The body is the file itself.
#[utoipa::path(
    put,
    path = "/rest/v1/ai-agent/api/kb/documents/{name}",
    tag = "knowledge base",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The document's name, e.g. `runbooks/orders.md`; the extension helps tell the format")),
    request_body(content = String, description = "The document: Markdown, plain text or HTML, UTF-8", content_type = "text/markdown"),
    responses(
        (status = 200, description = "Indexed; searchable at once", body = DocumentAdded),
        (status = 400, description = "Not a text document, empty, or a bad name", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 413, description = "Over the document size limit", body = ErrorBody),
        (status = 503, description = "The index is busy; retry", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<ApiState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<axum::Json<DocumentAdded>, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::bad_request(e.body_text()))?;
    auth.require_admin("adding knowledge-base documents")?;
    let bytes = read_body(request, &state, state.config().document_limit).await?;
    let kb = state.library().kb.clone();
    let tenant = auth.key.tenant.clone();
    let info = blocking("adding the document to the knowledge base", move || {
        kb.add_document(&tenant, &name, &bytes)
    })
    .await?;
    tracing::info!(document = %info.name, passages = info.passages, "knowledge-base document added");
    Ok(axum::Json(DocumentAdded {
        success: true,
        document: info.into(),
    }))
}

/// Remove a document of the caller's tenant (admin).
#[utoipa::path(
    delete,
    path = "/rest/v1/ai-agent/api/kb/documents/{name}",
    tag = "knowledge base",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The document's name as listed")),
    responses(
        (status = 200, description = "Removed from the index", body = DocumentRemoved),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "The tenant has no such document", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<ApiState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<DocumentRemoved>, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::bad_request(e.body_text()))?;
    auth.require_admin("removing knowledge-base documents")?;
    let kb = state.library().kb.clone();
    let tenant = auth.key.tenant.clone();
    let doc = name.clone();
    let removed = blocking("removing the document from the knowledge base", move || {
        kb.remove_document(&tenant, &doc)
    })
    .await?;
    if !removed {
        return Err(ApiError::not_found(
            "not_found",
            format!(
                "tenant '{}' has no knowledge-base document named '{name}'; list them with GET \
                 /kb/documents",
                auth.key.tenant
            ),
        ));
    }
    Ok(axum::Json(DocumentRemoved {
        success: true,
        removed: name,
    }))
}
