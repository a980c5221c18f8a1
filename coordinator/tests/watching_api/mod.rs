//! An API server the kube-runtime `Controller` can run against: kube-fake-client's
//! in-memory store for every verb it has, plus the one it lacks, `watch`, and a count of
//! every request that passes.
//!
//! Every successful write through this layer becomes a watch event for its collection
//! (`ADDED`, `MODIFIED`, `DELETED`), as the API server sends them; a write that changes
//! nothing (a server-side apply of what is already there) sends none, as the API server
//! does not. Lists carry a resource version that is the position in the log of changes, so
//! a watch started from a list misses nothing written in between. Metadata-only lists and
//! watches (`as=PartialObjectMetadata`) get objects reduced to their metadata.
//!
//! Two clients share one store and one log: [`WatchingApi::client`] is counted (give it
//! to the code under test), [`WatchingApi::uncounted`] is not (the test plays kubelet and
//! sidecars with it).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request the counted client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// A watch (long-lived), not a one-off request.
    pub watch: bool,
}

impl Recorded {
    /// A write to an `EtcdCluster`'s status subresource.
    pub fn is_status_write(&self) -> bool {
        self.method != "GET"
            && self.path.contains("/etcdclusters/")
            && self.path.ends_with("/status")
    }

    /// An Event created.
    pub fn is_event_create(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/events")
    }

    /// An Event patched (a series count).
    pub fn is_event_patch(&self) -> bool {
        self.method == "PATCH" && self.path.contains("/events/")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Collection {
    /// `api/v1` or `apis/<group>/<version>`.
    api: String,
    resource: String,
}

struct Target {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (api, at) = match *parts.first()? {
        "api" => (format!("api/{}", parts.get(1)?), 2),
        "apis" => (format!("apis/{}/{}", parts.get(1)?, parts.get(2)?), 3),
        _ => return None,
    };
    let rest = &parts[at..];
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    Some(Target {
        collection: Collection {
            api,
            resource: rest.first()?.to_string(),
        },
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
    })
}

struct Change {
    collection: Collection,
    namespace: Option<String>,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    log: Vec<Change>,
    /// The last content of every object written, without its resource version.
    last: HashMap<String, Value>,
    /// Every object's content but its metadata and status, and its generation.
    generations: HashMap<String, (Value, i64)>,
    requests: Vec<Recorded>,
}

struct Hub {
    state: Mutex<State>,
    length: watch::Sender<usize>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `object` the generation an API server would: one more each time anything
    /// but its metadata and status changes. (The fake bumps it on every write, even one
    /// that changes nothing.)
    fn fix_generation(&self, collection: &Collection, object: &mut Value) {
        let key = object_key(collection, object);
        let mut body = object.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("metadata");
            fields.remove("status");
        }
        let mut state = self.lock();
        let generation = match state.generations.get(&key) {
            Some((seen, generation)) if *seen == body => *generation,
            Some((_, generation)) => generation + 1,
            None => object["metadata"]["generation"].as_i64().unwrap_or(1),
        };
        state.generations.insert(key, (body, generation));
        if object["metadata"].get("generation").is_some() {
            object["metadata"]["generation"] = json!(generation);
        }
    }

    /// Logs a change of `object`, unless it changed nothing.
    fn record(&self, target: &Target, kind: &'static str, object: Value) {
        let key = object_key(&target.collection, &object);
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .map(str::to_string)
            .or_else(|| target.namespace.clone());
        let mut content = object.clone();
        if let Some(meta) = content["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
        let mut state = self.lock();
        if kind == "DELETED" {
            state.last.remove(&key);
            state.generations.remove(&key);
        } else if state.last.get(&key) == Some(&content) {
            return;
        } else {
            state.last.insert(key, content);
        }
        state.log.push(Change {
            collection: target.collection.clone(),
            namespace,
            kind,
            object,
        });
        let length = state.log.len();
        drop(state);
        self.length.send_replace(length);
    }
}

fn object_key(collection: &Collection, object: &Value) -> String {
    format!(
        "{}/{}/{}/{}",
        collection.api,
        collection.resource,
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// The API server (see the module doc).
#[derive(Clone)]
pub struct WatchingApi {
    inner: kube::Client,
    hub: Arc<Hub>,
    counted: bool,
}

impl WatchingApi {
    /// Over `fake`, a kube-fake-client client.
    pub fn new(fake: kube::Client) -> Self {
        Self {
            inner: fake,
            hub: Arc::new(Hub {
                state: Mutex::default(),
                length: watch::channel(0).0,
            }),
            counted: true,
        }
    }

    /// A client whose requests are counted.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// A client whose requests are not counted (its writes are still watch events).
    pub fn uncounted(&self) -> kube::Client {
        let mut this = self.clone();
        this.counted = false;
        kube::Client::new(this, "default")
    }

    /// Every request of the counted client so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.hub.lock().requests.clone()
    }

    async fn handle(
        self,
        req: Request<Body>,
    ) -> Result<Response<UnsyncBoxBody<Bytes, BoxError>>, BoxError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        if self.counted {
            self.hub.lock().requests.push(Recorded {
                method: parts.method.to_string(),
                path: path.clone(),
                watch: watching,
            });
        }
        let metadata_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let target = parse_path(&path).ok_or("not an API path")?;
        if parts.method == Method::GET && watching {
            return Ok(self.watch(target, &query, metadata_only));
        }
        let bytes = body.collect().await?.to_bytes();
        // What a deletion removes, for its event.
        let deleted = if parts.method == Method::DELETE {
            let get = Request::get(parts.uri.path()).body(Body::empty())?;
            let response = self.inner.send(get).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            status
                .is_success()
                .then(|| serde_json::from_slice::<Value>(&bytes).ok())
                .flatten()
        } else {
            None
        };
        let list_version = self.hub.lock().log.len();
        let mut forward = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone());
        for (name, value) in &parts.headers {
            forward = forward.header(name, value);
        }
        let response = self.inner.send(forward.body(Body::from(bytes))?).await?;
        let (mut head, body) = response.into_parts();
        let mut bytes = body.collect().await?.to_bytes();
        if head.status.is_success() && !bytes.is_empty() {
            let mut value: Value = serde_json::from_slice(&bytes)?;
            if parts.method == Method::GET && target.name.is_none() {
                value["metadata"]["resourceVersion"] = json!(list_version.to_string());
                for item in value["items"].as_array_mut().into_iter().flatten() {
                    self.hub.fix_generation(&target.collection, item);
                    if metadata_only {
                        *item = metadata_of(item);
                    }
                }
            } else if value["kind"] != "Status" {
                self.hub.fix_generation(&target.collection, &mut value);
            }
            match parts.method {
                Method::POST => self.hub.record(&target, "ADDED", value.clone()),
                Method::PUT | Method::PATCH => self.hub.record(&target, "MODIFIED", value.clone()),
                Method::DELETE => {
                    if let Some(object) = deleted {
                        self.hub.record(&target, "DELETED", object);
                    }
                }
                _ => {}
            }
            bytes = Bytes::from(serde_json::to_vec(&value)?);
            head.headers.remove(http::header::CONTENT_LENGTH);
        }
        Ok(Response::from_parts(
            head,
            Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
        ))
    }

    /// The changes of `target`'s collection (its namespace, or all), from the resource
    /// version asked for, matching the label selector; never ends.
    fn watch(
        &self,
        target: Target,
        query: &BTreeMap<String, String>,
        metadata_only: bool,
    ) -> Response<UnsyncBoxBody<Bytes, BoxError>> {
        let from: usize = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| self.hub.lock().log.len());
        let selector: Vec<(String, String)> = query
            .get("labelSelector")
            .map(|s| {
                s.split(',')
                    .filter_map(|term| term.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let hub = Arc::clone(&self.hub);
        let length = hub.length.subscribe();
        let events =
            futures::stream::unfold((hub, from, length), move |(hub, mut next, mut length)| {
                let target_collection = target.collection.clone();
                let namespace = target.namespace.clone();
                let selector = selector.clone();
                async move {
                    loop {
                        let found = {
                            let state = hub.lock();
                            let mut found = None;
                            while next < state.log.len() {
                                let change = &state.log[next];
                                next += 1;
                                let labels = &change.object["metadata"]["labels"];
                                if change.collection == target_collection
                                    && (namespace.is_none() || change.namespace == namespace)
                                    && selector
                                        .iter()
                                        .all(|(k, v)| labels[k].as_str() == Some(v.as_str()))
                                {
                                    let object = if metadata_only {
                                        metadata_of(&change.object)
                                    } else {
                                        change.object.clone()
                                    };
                                    found = Some(json!({"type": change.kind, "object": object}));
                                    break;
                                }
                            }
                            found
                        };
                        if let Some(event) = found {
                            let mut line = serde_json::to_vec(&event).expect("json");
                            line.push(b'\n');
                            return Some((
                                Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(line))),
                                (hub, next, length),
                            ));
                        }
                        if length.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            })
            .boxed();
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(events).boxed_unsync())
            .expect("a response")
    }
}

/// An object as a metadata-only request returns it.
fn metadata_of(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object["metadata"],
    })
}

impl tower::Service<Request<Body>> for WatchingApi {
    type Response = Response<UnsyncBoxBody<Bytes, BoxError>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        Box::pin(self.clone().handle(req))
    }
}
