//! The AdmissionReview request as detour reads it: borrowed from the body.
//!
//! Layer: pure (no I/O). One pass of the [`Reader`] over the body decodes the
//! envelope and the Pod's few fields ([`PodView`]); every other value
//! (managed fields, user info, the rest of the spec) is skipped, its grammar
//! checked but nothing built. Strings are borrowed from the body unless they
//! hold escapes.
//!
//! The shape rules are those of the serde structs this replaced (the test
//! module keeps them as the oracle): unknown fields are ignored, a field
//! given twice is an error, required fields must be present, `null` stands
//! for "absent" only where a field is optional. A Pod that is JSON but not
//! readable as a Pod (a list that is not a list, say) does not make the
//! request unreadable: the object is skipped and the request fails open.

use kube::core::admission::Operation;

use super::pod::{ContainerView, MetaView, PickedMap, PodSpecView, PodView, READ_KEYS};
pub use super::reader::Text;
use super::reader::{Reader, Result};

pub struct ReviewEnvelope<'a> {
    pub api_version: Text<'a>,
    pub kind: Text<'a>,
    pub request: Option<RequestEnvelope<'a>>,
}

pub struct RequestEnvelope<'a> {
    pub uid: Text<'a>,
    pub kind: GroupVersionKind<'a>,
    pub sub_resource: Option<Text<'a>>,
    pub name: Text<'a>,
    pub namespace: Option<Text<'a>>,
    pub operation: Operation,
    pub dry_run: bool,
}

pub struct GroupVersionKind<'a> {
    pub group: Text<'a>,
    pub kind: Text<'a>,
}

/// The decoded objects, or why the object could not be read as a Pod.
pub type Objects<'a> = std::result::Result<(Option<PodView<'a>>, Option<PodView<'a>>), String>;

/// Decodes the request and, when it holds a readable Pod, its objects.
pub fn decode(body: &[u8]) -> Result<(ReviewEnvelope<'_>, Objects<'_>)> {
    let mut reader = Reader::new(body);
    let mut api_version = None;
    let mut kind = None;
    let mut request = None;
    let mut objects: Objects = Ok((None, None));
    reader.object(|r, key| match key {
        b"apiVersion" => set(r, &mut api_version, "apiVersion", Reader::string),
        b"kind" => set(r, &mut kind, "kind", Reader::string),
        b"request" => set(r, &mut request, "request", |r| {
            optional(|r| request_envelope(r, &mut objects))(r)
        }),
        _ => r.skip(),
    })?;
    reader.end()?;
    let envelope = ReviewEnvelope {
        api_version: api_version.unwrap_or_default(),
        kind: kind.unwrap_or_default(),
        request: request.flatten(),
    };
    Ok((envelope, objects))
}

fn request_envelope<'a>(
    r: &mut Reader<'a>,
    objects: &mut Objects<'a>,
) -> Result<RequestEnvelope<'a>> {
    let mut uid = None;
    let mut kind = None;
    let mut resource = None;
    let mut sub_resource = None;
    let mut name = None;
    let mut namespace = None;
    let mut operation = None;
    let mut dry_run = None;
    let mut object = None;
    let mut old_object = None;
    r.object(|r, key| match key {
        b"uid" => set(r, &mut uid, "uid", Reader::string),
        b"kind" => set(r, &mut kind, "kind", group_version_kind),
        // Read only to refuse a request without one, as kube's typed request does.
        b"resource" => set(r, &mut resource, "resource", |r| {
            group_version(r, "resource")
        }),
        b"subResource" => set(
            r,
            &mut sub_resource,
            "subResource",
            optional(Reader::string),
        ),
        b"name" => set(r, &mut name, "name", Reader::string),
        b"namespace" => set(r, &mut namespace, "namespace", optional(Reader::string)),
        b"operation" => set(r, &mut operation, "operation", read_operation),
        b"dryRun" => set(r, &mut dry_run, "dryRun", Reader::bool),
        b"object" => set(r, &mut object, "object", pod_or_why),
        b"oldObject" => set(r, &mut old_object, "oldObject", pod_or_why),
        _ => r.skip(),
    })?;
    let request = RequestEnvelope {
        uid: required(r, uid, "uid")?,
        kind: required(r, kind, "kind")?,
        sub_resource: sub_resource.flatten(),
        name: name.unwrap_or_default(),
        namespace: namespace.flatten(),
        operation: required(r, operation, "operation")?,
        dry_run: dry_run.unwrap_or_default(),
    };
    required(r, resource, "resource")?;
    *objects = match (object.unwrap_or(Ok(None)), old_object.unwrap_or(Ok(None))) {
        (Ok(object), Ok(old)) => Ok((object, old)),
        (Err(why), _) | (_, Err(why)) => Err(why),
    };
    Ok(request)
}

/// Reads one field's value into `slot`; a second value is an error.
#[inline]
fn set<'a, T>(
    r: &mut Reader<'a>,
    slot: &mut Option<T>,
    name: &'static str,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T>,
) -> Result<()> {
    if slot.is_some() {
        return Err(r.error(format!("duplicate field `{name}`")));
    }
    *slot = Some(read(r)?);
    Ok(())
}

fn required<T>(r: &Reader, value: Option<T>, name: &str) -> Result<T> {
    value.ok_or_else(|| r.error(format!("missing field `{name}`")))
}

/// `null` or a value read by `read`.
#[inline]
fn optional<'a, T>(
    read: impl FnOnce(&mut Reader<'a>) -> Result<T>,
) -> impl FnOnce(&mut Reader<'a>) -> Result<Option<T>> {
    move |r| {
        if r.null()? {
            Ok(None)
        } else {
            read(r).map(Some)
        }
    }
}

/// A `{group, version, <last>}` object (a GroupVersionKind with `kind`, a
/// GroupVersionResource with `resource`), all three required.
fn group_version<'a>(r: &mut Reader<'a>, last: &'static str) -> Result<[Text<'a>; 3]> {
    let (mut group, mut version, mut third) = (None, None, None);
    r.object(|r, key| match key {
        b"group" => set(r, &mut group, "group", Reader::string),
        b"version" => set(r, &mut version, "version", Reader::string),
        k if k == last.as_bytes() => set(r, &mut third, last, Reader::string),
        _ => r.skip(),
    })?;
    Ok([
        required(r, group, "group")?,
        required(r, version, "version")?,
        required(r, third, last)?,
    ])
}

fn group_version_kind<'a>(r: &mut Reader<'a>) -> Result<GroupVersionKind<'a>> {
    let [group, _, kind] = group_version(r, "kind")?;
    Ok(GroupVersionKind { group, kind })
}

fn read_operation(r: &mut Reader) -> Result<Operation> {
    let text = r.string()?;
    match &*text {
        "CREATE" => Ok(Operation::Create),
        "UPDATE" => Ok(Operation::Update),
        "DELETE" => Ok(Operation::Delete),
        "CONNECT" => Ok(Operation::Connect),
        other => Err(r.error(format!(
            "unknown operation `{other}`, expected one of CREATE, UPDATE, DELETE, CONNECT"
        ))),
    }
}

/// The object as a Pod; if it is JSON but not a readable Pod, it is skipped
/// and the reason kept (the request then fails open). A fault in the JSON
/// itself is an error of the whole body.
fn pod_or_why<'a>(r: &mut Reader<'a>) -> Result<std::result::Result<Option<PodView<'a>>, String>> {
    if r.null()? {
        return Ok(Ok(None));
    }
    let start = r.mark();
    match pod_view(r) {
        Ok(pod) => Ok(Ok(Some(pod))),
        Err(why) => {
            r.rewind(start);
            r.skip()?;
            Ok(Err(format!("cannot read Pod: {why}")))
        }
    }
}

/// A Pod's metadata and container lists, the rest skipped.
pub fn pod_view<'a>(r: &mut Reader<'a>) -> Result<PodView<'a>> {
    let (mut metadata, mut spec) = (None, None);
    r.object(|r, key| match key {
        b"metadata" => set(r, &mut metadata, "metadata", meta_view),
        b"spec" => set(r, &mut spec, "spec", pod_spec_view),
        _ => r.skip(),
    })?;
    Ok(PodView {
        metadata: metadata.unwrap_or_default(),
        spec: spec.unwrap_or_default(),
    })
}

fn meta_view<'a>(r: &mut Reader<'a>) -> Result<MetaView<'a>> {
    let (mut name, mut generate_name, mut labels, mut annotations) = (None, None, None, None);
    r.object(|r, key| match key {
        b"name" => set(r, &mut name, "name", optional(Reader::string)),
        b"generateName" => set(
            r,
            &mut generate_name,
            "generateName",
            optional(Reader::string),
        ),
        b"labels" => set(r, &mut labels, "labels", optional(picked_map)),
        b"annotations" => set(r, &mut annotations, "annotations", optional(picked_map)),
        _ => r.skip(),
    })?;
    Ok(MetaView {
        name: name.flatten(),
        generate_name: generate_name.flatten(),
        labels: labels.flatten(),
        annotations: annotations.flatten(),
    })
}

/// A `map[string]string` of which only [`READ_KEYS`] are kept; every value
/// is still checked to be a string. The last of duplicate keys wins.
fn picked_map<'a>(r: &mut Reader<'a>) -> Result<PickedMap<'a>> {
    let mut kept = Vec::new();
    r.object(|r, key| {
        let key = r.key_text(key)?;
        let value = r.string()?;
        if let Some(read) = READ_KEYS.iter().find(|read| **read == key) {
            kept.push((*read, value));
        }
        Ok(())
    })?;
    Ok(PickedMap { kept })
}

fn pod_spec_view<'a>(r: &mut Reader<'a>) -> Result<PodSpecView<'a>> {
    let (mut containers, mut init_containers, mut ephemeral_containers) = (None, None, None);
    r.object(|r, key| match key {
        b"containers" => set(r, &mut containers, "containers", optional(containers_view)),
        b"initContainers" => set(
            r,
            &mut init_containers,
            "initContainers",
            optional(containers_view),
        ),
        b"ephemeralContainers" => set(
            r,
            &mut ephemeral_containers,
            "ephemeralContainers",
            optional(containers_view),
        ),
        _ => r.skip(),
    })?;
    Ok(PodSpecView {
        containers: containers.flatten(),
        init_containers: init_containers.flatten(),
        ephemeral_containers: ephemeral_containers.flatten(),
    })
}

fn containers_view<'a>(r: &mut Reader<'a>) -> Result<Vec<ContainerView<'a>>> {
    let mut list = Vec::new();
    r.array(|r| {
        let (mut name, mut image, mut pull_policy) = (None, None, None);
        r.object(|r, key| match key {
            b"name" => set(r, &mut name, "name", Reader::string),
            b"image" => set(r, &mut image, "image", optional(Reader::string)),
            b"imagePullPolicy" => set(
                r,
                &mut pull_policy,
                "imagePullPolicy",
                optional(Reader::string),
            ),
            _ => r.skip(),
        })?;
        list.push(ContainerView {
            name: name.unwrap_or_default(),
            image: image.flatten(),
            image_pull_policy: pull_policy.flatten(),
        });
        Ok(())
    })?;
    Ok(list)
}
