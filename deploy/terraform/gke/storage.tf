# ---------------------------------------------------------------------------------------------
# MLflow artifacts bucket: uniform bucket-level access, public access prevented, versioned, with
# old versions expiring after var.artifacts_noncurrent_days.
# ---------------------------------------------------------------------------------------------

resource "google_storage_bucket" "artifacts" {
  #checkov:skip=CKV_GCP_62:Object access is audited by Cloud Audit Logs (Data Access logs for Cloud Storage, enabled below), not the legacy usage-log export to a second bucket.
  name          = "${var.project_id}-${local.prefix}-mlflow-artifacts"
  location      = var.region
  storage_class = "STANDARD"
  force_destroy = false
  labels        = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 604800 # 7 days
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.artifacts_noncurrent_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 3
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

# Who read or wrote which artifact: Data Access audit logs for Cloud Storage in this project.
resource "google_project_iam_audit_config" "storage" {
  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }

  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
