# ---------------------------------------------------------------------------------------------
# Cloud SQL for PostgreSQL: private IP only, TLS required, automated backups with point-in-time
# recovery. Two databases, each with its own user: `mlflow` (MLflow's backend store) and `loopml`
# (routing state, predictions, feedback, audit log).
# ---------------------------------------------------------------------------------------------

locals {
  databases = toset(["mlflow", "loopml"])
}

resource "random_id" "db_suffix" {
  byte_length = 3
}

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_6:ssl_mode defaults to ENCRYPTED_ONLY, which rejects every unencrypted connection; checkov only accepts client-certificate mTLS, available as var.db_ssl_mode = TRUSTED_CLIENT_CERTIFICATE_REQUIRED (needs the Auth Proxy).
  #checkov:skip=CKV_GCP_79:The major version is var.db_version (POSTGRES_15..18, validated); a major upgrade is a planned change tested against MLflow's and loopml's migrations, not a scanner default.
  # Instance names cannot be reused for a week after deletion: hence the random suffix.
  name                = "${local.prefix}-pg-${random_id.db_suffix.hex}"
  region              = var.region
  database_version    = var.db_version
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.db_tier
    edition                     = startswith(var.db_tier, "db-perf-optimized") ? "ENTERPRISE_PLUS" : "ENTERPRISE"
    availability_type           = var.db_high_availability ? "REGIONAL" : "ZONAL"
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.this.id
      enable_private_path_for_google_cloud_services = true
      ssl_mode                                      = var.db_ssl_mode
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "02:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = var.db_backup_retention_count
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = true
      record_client_address   = false
    }

    # Logging flags recommended by the CIS GCP benchmark.
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "this" {
  for_each = local.databases

  name     = each.key
  instance = google_sql_database_instance.this.name
}

resource "random_password" "db" {
  for_each = local.databases

  length  = 32
  special = false # the password goes into a URL
}

resource "google_sql_user" "this" {
  for_each = local.databases

  name     = each.key
  instance = google_sql_database_instance.this.name
  password = random_password.db[each.key].result
}

locals {
  # SQLAlchemy URLs as LOOPML_DATABASE_URL and the MLflow server's --backend-store-uri take them.
  # The driver is named: a bare postgresql:// means psycopg2, which the image does not carry.
  # With the Auth Proxy (mTLS) the URL points at the sidecar, which encrypts on its own.
  db_via_proxy = var.db_ssl_mode == "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
  database_urls = {
    for db in local.databases :
    db => "postgresql+psycopg://${google_sql_user.this[db].name}:${random_password.db[db].result}@${local.db_via_proxy ? "127.0.0.1" : google_sql_database_instance.this.private_ip_address}:5432/${google_sql_database.this[db].name}?sslmode=${local.db_via_proxy ? "disable" : "require"}"
  }
}
