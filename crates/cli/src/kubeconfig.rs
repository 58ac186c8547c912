//! `--merge-kubeconfig`: the cluster's admin kubeconfig merged into the user's default one, as
//! the Go CLI does: its cluster, user and context replace entries of the same name, and its
//! context becomes the current one. The file is written atomically, owner-only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_norway::{Mapping, Value};

/// The user's default kubeconfig: the first path of `$KUBECONFIG`, else `~/.kube/config`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        if let Some(first) = std::env::split_paths(&k).next() {
            return Ok(first);
        }
    }
    let home = std::env::var_os("HOME").context("neither $KUBECONFIG nor $HOME is set")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

fn entries<'a>(m: &'a mut Mapping, key: &str) -> anyhow::Result<&'a mut Vec<Value>> {
    let v = m
        .entry(Value::from(key))
        .or_insert_with(|| Value::Sequence(vec![]));
    if v.is_null() {
        *v = Value::Sequence(vec![]);
    }
    v.as_sequence_mut()
        .with_context(|| format!("`{key}` is not a list"))
}

/// Merges the kubeconfig `admin` into `target` (created when missing).
pub fn merge(admin: &Path, target: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(admin).with_context(|| format!("reading {}", admin.display()))?;
    let new: Value = serde_norway::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig", admin.display()))?;
    let new = new
        .as_mapping()
        .with_context(|| format!("{} is not a kubeconfig", admin.display()))?;
    let mut base: Mapping = match std::fs::read_to_string(target) {
        Ok(t) if !t.trim().is_empty() => serde_norway::from_str::<Value>(&t)
            .ok()
            .and_then(|v| v.as_mapping().cloned())
            .with_context(|| {
                format!(
                    "{} is not a kubeconfig; fix or move it, then run again",
                    target.display()
                )
            })?,
        Ok(_) => Mapping::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Mapping::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
    };
    base.entry(Value::from("apiVersion"))
        .or_insert_with(|| Value::from("v1"));
    base.entry(Value::from("kind"))
        .or_insert_with(|| Value::from("Config"));
    for key in ["clusters", "users", "contexts"] {
        let add: Vec<Value> = new
            .get(key)
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let list = entries(&mut base, key)
            .with_context(|| format!("{} cannot be merged", target.display()))?;
        for item in add {
            let name = item.get("name").cloned();
            list.retain(|e| e.get("name") != name.as_ref());
            list.push(item);
        }
    }
    if let Some(ctx) = new.get("current-context") {
        base.insert(Value::from("current-context"), ctx.clone());
    }
    let out = serde_norway::to_string(&Value::Mapping(base)).context("writing the kubeconfig")?;
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    config::atomic::replace(target, out.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", target.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ADMIN: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: mini\n  cluster:\n    server: https://127.20.0.1:6443\ncontexts:\n- name: admin@mini\n  context:\n    cluster: mini\n    user: admin\ncurrent-context: admin@mini\nusers:\n- name: admin\n  user:\n    token: t\n";

    #[test]
    fn merges_replaces_by_name_and_switches_context() {
        let t = tempfile::tempdir().unwrap();
        let admin = t.path().join("admin.conf");
        std::fs::write(&admin, ADMIN).unwrap();
        let target = t.path().join("kube/config");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(
            &target,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://10.0.0.1\n- name: mini\n  cluster:\n    server: https://old\ncontexts: []\nusers: []\ncurrent-context: other\npreferences: {}\n",
        )
        .unwrap();
        merge(&admin, &target).unwrap();
        merge(&admin, &target).unwrap(); // idempotent
        let v: Value = serde_norway::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
        let clusters = v["clusters"].as_sequence().unwrap();
        let names: Vec<&str> = clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["other", "mini"]);
        assert_eq!(
            clusters[1]["cluster"]["server"].as_str(),
            Some("https://127.20.0.1:6443")
        );
        assert_eq!(v["current-context"].as_str(), Some("admin@mini"));
        assert!(v.get("preferences").is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A file that is not a kubeconfig is left alone.
        std::fs::write(&target, "- just\n- a list\n").unwrap();
        let e = merge(&admin, &target).unwrap_err();
        assert!(format!("{e:#}").contains("is not a kubeconfig"), "{e:#}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "- just\n- a list\n"
        );
    }
}
