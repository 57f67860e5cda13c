# ---------------------------------------------------------------------------------------------
# Node service account: only what nodes need (logs, metrics, pulling loopml's images).
# Workloads never use it: they run as their own Workload Identity (identities.tf).
# ---------------------------------------------------------------------------------------------

resource "google_service_account" "nodes" {
  account_id   = "${local.prefix}-nodes"
  display_name = "GKE nodes of ${local.prefix}"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

# ---------------------------------------------------------------------------------------------
# Cluster: regional, VPC-native, private nodes, Workload Identity, shielded nodes, Dataplane V2
# (network policies), secrets encrypted with KMS, control plane limited to authorized networks.
# ---------------------------------------------------------------------------------------------

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_12:Dataplane V2 (ADVANCED_DATAPATH) enforces NetworkPolicy itself; the legacy Calico network_policy block must stay off with it.
  #checkov:skip=CKV_GCP_65:RBAC through Google Groups needs a Google Workspace domain with a gke-security-groups group; access is granted with IAM roles until one exists.
  #checkov:skip=CKV_GCP_66:Binary Authorization needs an attestor and a signing pipeline the project does not have yet; images are immutable and scanned on push instead.
  name     = local.prefix
  location = var.region

  network    = google_compute_network.this.id
  subnetwork = google_compute_subnetwork.nodes.id

  # The default pool is replaced by google_container_node_pool.default (autoscaling, shielded).
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection = var.deletion_protection
  networking_mode     = "VPC_NATIVE"
  # Dataplane V2 enforces the NetworkPolicies of deploy/k8s (no separate network policy add-on).
  datapath_provider = "ADVANCED_DATAPATH"

  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  enable_legacy_abac          = false

  release_channel {
    channel = var.release_channel
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.private_endpoint
    master_ipv4_cidr_block  = var.master_cidr

    master_global_access_config {
      enabled = false
    }
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.gke_secrets.id
  }

  # Applies to the short-lived default pool as well.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS", "APISERVER"]
  }

  # Google Cloud Managed Service for Prometheus stays off: loopml's optional monitoring component
  # (deploy/k8s) is written for the Prometheus Operator (ServiceMonitor, PrometheusRule), which
  # kube-prometheus-stack installs; Managed Prometheus would scrape nothing of loopml's and bring
  # its own, different CRDs. Install the operator before enabling that component (docs/deploy.md).
  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]

    managed_prometheus {
      enabled = false
    }
  }

  addons_config {
    http_load_balancing {
      disabled = false
    }

    horizontal_pod_autoscaling {
      disabled = false
    }
  }

  # The provider's default_labels (local.labels) are added to these.
  resource_labels = {
    component = "gke"
  }

  depends_on = [
    google_project_service.this,
    google_kms_crypto_key_iam_member.gke_secrets,
  ]

  lifecycle {
    ignore_changes = [node_config]
  }
}

resource "google_container_node_pool" "default" {
  name     = "default"
  cluster  = google_container_cluster.this.id
  location = var.region

  initial_node_count = var.node_min_count

  autoscaling {
    min_node_count = var.node_min_count
    max_node_count = var.node_max_count
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.node_machine_type
    image_type      = "COS_CONTAINERD"
    disk_size_gb    = var.node_disk_size_gb
    disk_type       = "pd-balanced"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = local.labels

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }
  }

  lifecycle {
    # The cluster autoscaler owns the current size.
    ignore_changes = [initial_node_count]
  }
}
