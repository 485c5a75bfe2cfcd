//! Streams over Intercom's paginated endpoints.

use std::collections::HashSet;

use futures_util::stream::{self, BoxStream, StreamExt};
use http::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use blueprint_core::ConnectionId;

use crate::client::{Call, IntercomClient};
use crate::error::IntercomError;

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Cursor {
    Start,
    StartingAfter(String),
    /// `pages.next` given as a URL (older endpoints): its path and query, sent to the
    /// client's own base URL, never to the host the URL names.
    Target(String),
    ScrollParam(String),
}

#[derive(Debug, Clone)]
enum Kind {
    List,
    Search(Value),
    Scroll,
}

/// A paginated read, from [`IntercomClient::list`], [`IntercomClient::search`] or
/// [`IntercomClient::scroll_companies`]. Every page goes through the whole stack, so the
/// rate-limit layer paces a long listing instead of letting it run into 429s.
#[derive(Debug, Clone)]
#[must_use = "a listing does nothing until its stream is polled"]
pub struct Paginate {
    client: IntercomClient,
    kind: Kind,
    path: String,
    per_page: u32,
    connection: Option<ConnectionId>,
    version: Option<String>,
    items_key: Option<String>,
}

impl IntercomClient {
    /// Every item of a list endpoint (`/contacts`, `/conversations`, `/admins`, …),
    /// following `pages.next.starting_after` (or a `pages.next` URL).
    pub fn list(&self, path: &str) -> Paginate {
        self.paginate(Kind::List, path)
    }

    /// Every result of a search endpoint (`/contacts/search`, `/conversations/search`):
    /// `query` is Intercom's query object; the body's `pagination` is managed here.
    pub fn search(&self, path: &str, query: Value) -> Paginate {
        self.paginate(Kind::Search(query), path)
    }

    /// Every company, through `GET /companies/scroll` (Intercom allows one scroll per app
    /// at a time, and a scroll expires after a minute unused).
    pub fn scroll_companies(&self) -> Paginate {
        self.paginate(Kind::Scroll, "/companies/scroll")
    }

    fn paginate(&self, kind: Kind, path: &str) -> Paginate {
        Paginate {
            client: self.clone(),
            kind,
            path: path.to_owned(),
            per_page: 50,
            connection: None,
            version: None,
            items_key: None,
        }
    }
}

impl Paginate {
    /// Items per page (Intercom allows up to 150). Default 50. Ignored by the scroll.
    pub fn per_page(mut self, per_page: u32) -> Self {
        self.per_page = per_page.clamp(1, 150);
        self
    }

    /// Reads with this connection's token and budget.
    pub fn connection(mut self, connection: impl Into<ConnectionId>) -> Self {
        self.connection = Some(connection.into());
        self
    }

    /// Sends this `Intercom-Version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The field of a page that holds its items. By default `data`, or else the page's
    /// first array field (`conversations`, `admins`, …).
    pub fn items_key(mut self, key: impl Into<String>) -> Self {
        self.items_key = Some(key.into());
        self
    }

    /// The pages, as Intercom sent them. The stream is boxed (once per listing) so it is
    /// `Unpin`: `.next().await` works on it directly.
    pub fn pages(self) -> BoxStream<'static, Result<Value, IntercomError>> {
        // The cursors seen so far: a server that repeats or cycles cursors ends the
        // listing instead of looping forever.
        let seen: HashSet<Cursor> = HashSet::new();
        stream::unfold((Some(Cursor::Start), seen), move |(cursor, mut seen)| {
            let this = self.clone();
            async move {
                let cursor = cursor?;
                let call = this.call_for(&cursor);
                let page = match call {
                    Ok(call) => call.send::<Value>().await,
                    Err(error) => Err(error),
                };
                match page {
                    Ok(page) => {
                        seen.insert(cursor);
                        let next = this.next_cursor(&page).filter(|next| !seen.contains(next));
                        Some((Ok(page), (next, seen)))
                    }
                    Err(error) => Some((Err(error), (None, seen))),
                }
            }
        })
        .boxed()
    }

    /// The items of every page, parsed as `T`.
    pub fn items<T>(self) -> BoxStream<'static, Result<T, IntercomError>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let key = self.items_key.clone();
        self.pages()
            .map(move |page| {
                let items: Vec<Result<T, IntercomError>> = match page {
                    Ok(mut page) => take_items(&mut page, key.as_deref())
                        .into_iter()
                        .map(|item| {
                            serde_json::from_value(item).map_err(|e| IntercomError::Decode {
                                status: http::StatusCode::OK,
                                message: e.to_string(),
                            })
                        })
                        .collect(),
                    Err(error) => vec![Err(error)],
                };
                stream::iter(items)
            })
            .flatten()
            .boxed()
    }

    fn call_for(&self, cursor: &Cursor) -> Result<Call, IntercomError> {
        let per_page = self.per_page.to_string();
        let call = match (&self.kind, cursor) {
            (_, Cursor::Target(target)) => self.client.request(Method::GET, target),
            (Kind::List, Cursor::StartingAfter(after)) => self
                .client
                .request(Method::GET, &self.path)
                .query(&[("per_page", per_page.as_str()), ("starting_after", after)]),
            (Kind::List, _) => self
                .client
                .request(Method::GET, &self.path)
                .query(&[("per_page", per_page.as_str())]),
            (Kind::Search(query), cursor) => {
                let mut pagination = json!({ "per_page": self.per_page });
                if let Cursor::StartingAfter(after) = cursor {
                    pagination["starting_after"] = Value::String(after.clone());
                }
                self.client
                    .request(Method::POST, &self.path)
                    .json(&json!({ "query": query, "pagination": pagination }))?
            }
            (Kind::Scroll, Cursor::ScrollParam(param)) => self
                .client
                .request(Method::GET, &self.path)
                .query(&[("scroll_param", param.as_str())]),
            (Kind::Scroll, _) => self.client.request(Method::GET, &self.path),
        };
        let call = match &self.connection {
            Some(connection) => call.connection(connection.clone()),
            None => call,
        };
        Ok(match &self.version {
            Some(version) => call.version(version.clone()),
            None => call,
        })
    }

    fn next_cursor(&self, page: &Value) -> Option<Cursor> {
        // A page without items is the last, whatever its cursor says.
        if items_of(page, self.items_key.as_deref()).is_none_or(Vec::is_empty) {
            return None;
        }
        if let Kind::Scroll = self.kind {
            let param = page.get("scroll_param")?.as_str()?;
            return Some(Cursor::ScrollParam(param.to_owned()));
        }
        let next = page.get("pages")?.get("next")?;
        if let Some(after) = next.get("starting_after").and_then(Value::as_str) {
            return Some(Cursor::StartingAfter(after.to_owned()));
        }
        let url = next.as_str()?;
        let uri: http::Uri = url.parse().ok()?;
        uri.path_and_query()
            .map(|pq| Cursor::Target(pq.as_str().to_owned()))
    }
}

fn items_of<'a>(page: &'a Value, key: Option<&str>) -> Option<&'a Vec<Value>> {
    let object = page.as_object()?;
    match key {
        Some(key) => object.get(key)?.as_array(),
        None => object.get("data").and_then(Value::as_array).or_else(|| {
            object
                .iter()
                .filter(|(k, _)| *k != "errors")
                .find_map(|(_, v)| v.as_array())
        }),
    }
}

fn take_items(page: &mut Value, key: Option<&str>) -> Vec<Value> {
    let key = match key {
        Some(key) => key.to_owned(),
        None => match page.as_object() {
            Some(object) if object.get("data").is_some_and(Value::is_array) => "data".to_owned(),
            Some(object) => match object.iter().find(|(k, v)| *k != "errors" && v.is_array()) {
                Some((k, _)) => k.clone(),
                None => return Vec::new(),
            },
            None => return Vec::new(),
        },
    };
    match page.get_mut(&key).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}
