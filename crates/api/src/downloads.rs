//! Files the server hands out: the Python client as one file, so a machine that can reach the
//! server can get a client with `curl -O` and nothing else. It is the open-source client, the
//! same text as `clients/python/etlworks_agent/__init__.py` (built into the binary), so it is
//! served without a key, like `/health`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Where the Python client is served.
pub const PYTHON_CLIENT_PATH: &str = "/downloads/etlworks_agent.py";

/// The Python client module, as built into this binary.
pub const PYTHON_CLIENT: &str = include_str!("../../../clients/python/etlworks_agent/__init__.py");

/// The Python client (`etlworks_agent.py`) as one file: importable (`from etlworks_agent import
/// EtlworksAgent`) and runnable (`python3 etlworks_agent.py tools`); it needs Python 3.9+ and
/// `requests`. No key needed.
#[utoipa::path(
    get,
    path = "/downloads/etlworks_agent.py",
    tag = "service",
    responses((
        status = 200,
        description = "The Python client and command line as one file",
        content_type = "text/x-python"
    ))
)]
pub async fn python_client() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/x-python; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"etlworks_agent.py\"",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PYTHON_CLIENT,
    )
        .into_response()
}
