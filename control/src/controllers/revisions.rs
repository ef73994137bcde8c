//! ControllerRevisions: the template history of StatefulSets and DaemonSets, which
//! `kubectl rollout history` lists and `kubectl rollout undo` applies back (its `data` is
//! the strategic merge patch that restores the template, as upstream writes it).

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// `matchLabels` as a label selector string (what kubectl lists revisions by).
fn selector_text(sel: &LabelSelector) -> String {
    sel.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A StatefulSet or DaemonSet as its revisions see it.
pub struct Owner<'a> {
    pub reference: OwnerReference,
    pub selector: &'a LabelSelector,
    pub template: &'a PodTemplateSpec,
    /// `revisionHistoryLimit`.
    pub limit: i32,
}

/// Makes the revision `<owner>-<hash>` the newest of the owner's, creating it if needed,
/// and deletes the oldest beyond the history limit (never one named in `keep`).
pub async fn sync(client: &kube::Client, ns: &str, owner: Owner<'_>, hash: &str, keep: &[&str]) -> Result<(), kube::Error> {
    let Owner { reference: owner, selector, template, limit } = owner;
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let listed = api.list(&ListParams::default().labels(&selector_text(selector))).await?;
    let mut mine: Vec<ControllerRevision> = listed.items.into_iter().filter(|r| r.metadata.owner_references.iter().flatten().any(|o| o.uid == owner.uid)).collect();
    mine.sort_by_key(|r| r.revision.unwrap_or(0));
    let newest = mine.last().and_then(|r| r.revision).unwrap_or(0);
    let name = format!("{}-{hash}", owner.name);
    match mine.iter().find(|r| r.metadata.name.as_deref() == Some(name.as_str())) {
        Some(r) if r.revision.unwrap_or(0) < newest => {
            // A template that came back (an undo) is the newest revision again.
            api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"revision": newest + 1}))).await?;
        }
        Some(_) => {}
        None => {
            let mut template_json = serde_json::to_value(template).unwrap_or_default();
            template_json["$patch"] = json!("replace");
            let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.into());
            let revision = json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [owner]},
                "data": {"spec": {"template": template_json}},
                "revision": newest + 1,
            });
            let revision: ControllerRevision = serde_json::from_value(revision).map_err(kube::Error::SerdeError)?;
            match api.create(&PostParams::default(), &revision).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
            mine.push(revision);
        }
    }
    let extra = mine.len().saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    for r in mine.iter().filter(|r| r.metadata.name.as_deref().is_some_and(|n| n != name && !keep.contains(&n))).take(extra) {
        match api.delete(r.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
