# ---------------------------------------------------------------------------------------------
# Artifact Registry: loopml's Docker images. Tags are immutable (a tag always means the same
# image); every pushed image is scanned (containerscanning.googleapis.com, main.tf).
# ---------------------------------------------------------------------------------------------

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:The images hold no secrets (built from this repository's source); Google-managed encryption at rest is enough, and a CMEK would add a key-availability dependency to every pull.
  location      = var.region
  repository_id = local.prefix
  description   = "loopml container images (${var.environment})"
  format        = "DOCKER"
  labels        = local.labels

  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "1209600s" # 14 days
    }
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}
