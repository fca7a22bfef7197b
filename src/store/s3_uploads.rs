//! Incomplete S3 multipart uploads under the repository prefix: the S3 counterpart of
//! file://'s staging files. `object_store` can abort an upload but not list them, so this
//! sends ListMultipartUploads and ListParts itself, as URLs presigned by `object_store`
//! (its credentials, region and addressing style) over a client built from the same options.

use std::time::{Duration, SystemTime};

use object_store::aws::AmazonS3;
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjPath;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::ClientOptions;
use serde::Deserialize;

/// How a leftover upload is named among staging leftovers: `<name>?uploadId=<id>`, the id
/// percent-encoded (tidewal never writes a `?` into an object name).
const UPLOAD_MARK: &str = "?uploadId=";

/// One incomplete upload: its name inside the repository, its id, and its last activity
/// (the newest part's upload time, or when it was started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub name: String,
    pub id: String,
    pub active: SystemTime,
}

/// The leftover name of an upload (pure).
pub fn upload_name(name: &str, id: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("{name}{UPLOAD_MARK}{id}")
}

/// The object name and upload id of a leftover upload name (pure).
pub fn parse_upload_name(leftover: &str) -> Option<(&str, String)> {
    let (name, id) = leftover.split_once(UPLOAD_MARK)?;
    let id: String = url::form_urlencoded::parse(format!("i={id}").as_bytes()).next()?.1.into_owned();
    (!name.is_empty() && !id.is_empty()).then_some((name, id))
}

#[derive(Clone, Debug)]
pub struct S3Uploads {
    s3: AmazonS3,
    /// The repository prefix inside the bucket, without slashes at either end ("" for none).
    prefix: String,
    http: HttpClient,
}

/// Why uploads could not be listed.
#[derive(Debug)]
pub enum UploadsError {
    /// The server does not offer the call, or the credentials may not use it: the bucket's
    /// lifecycle rule has to do the clean-up.
    NotOffered(String),
    Failed(String),
}

impl S3Uploads {
    pub fn new(s3: AmazonS3, prefix: &str, client: &ClientOptions) -> Result<S3Uploads, String> {
        let http = ReqwestConnector::default().connect(client).map_err(|e| e.to_string())?;
        Ok(S3Uploads { s3, prefix: prefix.trim_matches('/').to_string(), http })
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Every incomplete upload under the repository prefix, sorted by name.
    pub async fn list(&self) -> Result<Vec<Upload>, UploadsError> {
        let prefix = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut q = vec![("uploads".to_string(), String::new()), ("prefix".to_string(), prefix.clone())];
            if let Some((key, id)) = &markers {
                q.push(("key-marker".into(), key.clone()));
                q.push(("upload-id-marker".into(), id.clone()));
            }
            let page: ListUploads = self.get("", q, "list incomplete uploads").await?;
            for u in page.uploads {
                let Some(name) = u.key.strip_prefix(&prefix).filter(|n| !n.is_empty()) else { continue };
                let initiated = parse_time(&u.initiated).map_err(UploadsError::Failed)?;
                out.push(Upload { name: name.to_string(), id: u.upload_id, active: initiated });
            }
            match (page.truncated, page.next_key_marker, page.next_upload_id_marker) {
                (true, Some(k), Some(i)) if markers.as_ref() != Some(&(k.clone(), i.clone())) => markers = Some((k, i)),
                (true, ..) => {
                    return Err(UploadsError::Failed("the upload listing is truncated without a marker".into()))
                }
                _ => break,
            }
        }
        for u in &mut out {
            if let Some(t) = self.newest_part(u).await? {
                u.active = u.active.max(t);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// When the newest part of an upload was stored: a long upload is active while parts arrive.
    async fn newest_part(&self, u: &Upload) -> Result<Option<SystemTime>, UploadsError> {
        let mut newest = None;
        let mut marker: Option<String> = None;
        loop {
            let mut q = vec![("uploadId".to_string(), u.id.clone())];
            if let Some(m) = &marker {
                q.push(("part-number-marker".into(), m.clone()));
            }
            let page: ListParts = match self.get(&self.key(&u.name), q, "list the parts of an upload").await {
                Ok(p) => p,
                // Completed or aborted meanwhile.
                Err(UploadsError::Failed(e)) if e.contains("NoSuchUpload") => return Ok(newest),
                Err(e) => return Err(e),
            };
            for p in page.parts {
                let t = parse_time(&p.last_modified).map_err(UploadsError::Failed)?;
                newest = newest.max(Some(t));
            }
            match (page.truncated, page.next_part_number_marker) {
                (true, Some(m)) if marker.as_ref() != Some(&m) => marker = Some(m),
                _ => return Ok(newest),
            }
        }
    }

    /// Abort an upload; one already gone is fine.
    pub async fn abort(&self, name: &str, id: &str) -> Result<(), object_store::Error> {
        match self.s3.abort_multipart(&ObjPath::from(self.key(name)), &id.to_string()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        query: Vec<(String, String)>,
        what: &str,
    ) -> Result<T, UploadsError> {
        let fail = |e: String| UploadsError::Failed(format!("cannot {what}: {e}"));
        let opts = SignedUrlOptions::default().with_query(query);
        let url = self
            .s3
            .signed_url_opts(http::Method::GET, &ObjPath::from(key), Duration::from_secs(300), &opts)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut tries = 0;
        let (status, body) = loop {
            tries += 1;
            let req =
                http::Request::get(url.as_str()).body(HttpRequestBody::empty()).map_err(|e| fail(e.to_string()))?;
            let res = match self.http.execute(req).await {
                Ok(r) => r,
                Err(e) if tries < 3 => {
                    tracing::debug!("{what}: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                    continue;
                }
                Err(e) => return Err(fail(e.to_string())),
            };
            let status = res.status();
            let body = res.into_body().bytes().await.map_err(|e| fail(e.to_string()))?;
            if status.is_server_error() && status != http::StatusCode::NOT_IMPLEMENTED && tries < 3 {
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                continue;
            }
            break (status, body);
        };
        let text = String::from_utf8_lossy(&body);
        if status.is_success() {
            return quick_xml::de::from_str(&text).map_err(|e| fail(format!("unreadable answer: {e}")));
        }
        let code = error_code(&text).unwrap_or_default();
        let msg = format!("cannot {what}: the server answered {status} {code}");
        if status == http::StatusCode::NOT_IMPLEMENTED || code == "NotImplemented" || code == "AccessDenied" {
            Err(UploadsError::NotOffered(msg))
        } else {
            Err(UploadsError::Failed(msg))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploads {
    #[serde(rename = "Upload", default)]
    uploads: Vec<ListedUpload>,
    #[serde(rename = "IsTruncated", default)]
    truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListParts {
    #[serde(rename = "Part", default)]
    parts: Vec<ListedPart>,
    #[serde(rename = "IsTruncated", default)]
    truncated: bool,
    next_part_number_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedPart {
    last_modified: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: String,
}

fn error_code(text: &str) -> Option<String> {
    quick_xml::de::from_str::<ErrorBody>(text).ok().map(|e| e.code)
}

/// S3's timestamps: RFC 3339 in UTC, usually with milliseconds (pure).
fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z'))
        .map_err(|e| format!("unreadable time {s:?} in the upload listing: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_round_trip() {
        let n = upload_name("backups/x/base.tar", "2~a/b+c=d?e");
        assert!(!n["backups/x/base.tar".len()..].contains('/'), "{n}");
        assert_eq!(parse_upload_name(&n), Some(("backups/x/base.tar", "2~a/b+c=d?e".to_string())));
        assert_eq!(parse_upload_name("backups/x/base.tar"), None);
        assert_eq!(parse_upload_name("backups/x/base.tar?uploadId="), None);
    }

    #[test]
    fn listings_parse() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>c/wal/x</NextKeyMarker><NextUploadIdMarker>id2</NextUploadIdMarker>
  <Prefix>c/</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>c/backups/a/base.tar</Key><UploadId>id1</UploadId>
    <Initiator><ID>x</ID></Initiator><StorageClass>STANDARD</StorageClass>
    <Initiated>2026-11-26T13:27:58.000Z</Initiated></Upload>
  <Upload><Key>c/wal/x</Key><UploadId>id2</UploadId><Initiated>2026-11-26T13:27:59Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let l: ListUploads = quick_xml::de::from_str(xml).unwrap();
        assert!(l.truncated);
        assert_eq!(l.uploads.len(), 2);
        assert_eq!(l.uploads[1].upload_id, "id2");
        assert_eq!((l.next_key_marker.as_deref(), l.next_upload_id_marker.as_deref()), (Some("c/wal/x"), Some("id2")));
        let t = parse_time(&l.uploads[0].initiated).unwrap();
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_699_678));
        assert_eq!(parse_time(&l.uploads[1].initiated).unwrap(), t + Duration::from_secs(1));
        let empty: ListUploads = quick_xml::de::from_str(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty() && !empty.truncated);
        let parts: ListParts = quick_xml::de::from_str(
            "<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber>\
             <LastModified>2026-11-26T13:30:00.000Z</LastModified><ETag>\"e\"</ETag><Size>5</Size></Part></ListPartsResult>",
        )
        .unwrap();
        assert_eq!(parts.parts.len(), 1);
        assert_eq!(
            error_code("<Error><Code>NotImplemented</Code><Message>m</Message></Error>").as_deref(),
            Some("NotImplemented")
        );
    }
}
