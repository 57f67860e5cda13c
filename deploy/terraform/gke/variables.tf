# ---------------------------------------------------------------------------------------------
# Project, naming
# ---------------------------------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "GCP project ID everything is created in."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "GCP region of the cluster, the database, the registry and the bucket (e.g. europe-west1)."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must look like europe-west1 or us-central1 (a region, not a zone)."
  }
}

variable "environment" {
  type        = string
  description = "Environment name: part of every resource name and label."

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "name" {
  type        = string
  description = "Name prefix of every resource."
  default     = "loopml"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name))
    error_message = "name must be 2-12 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Extra labels added to every resource that supports labels."
  default     = {}
}

# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the nodes' subnet."
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR block."
  }
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for Pod IPs (VPC-native cluster)."
  default     = "10.20.0.0/14"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be a CIDR block."
  }
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for Service IPs."
  default     = "10.24.0.0/20"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be a CIDR block."
  }
}

variable "master_cidr" {
  type        = string
  description = "/28 range of the private control-plane endpoint."
  default     = "172.16.0.0/28"

  validation {
    condition     = can(cidrhost(var.master_cidr, 0)) && endswith(var.master_cidr, "/28")
    error_message = "master_cidr must be a /28 CIDR block."
  }
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "CIDR blocks allowed to reach the control plane (CI runners, VPN). Empty: only the VPC."
  default     = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0))])
    error_message = "Every master_authorized_networks entry needs a valid cidr_block."
  }

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : n.cidr_block != "0.0.0.0/0"])
    error_message = "0.0.0.0/0 is not an authorized network: list the real ranges."
  }
}

variable "private_endpoint" {
  type        = bool
  description = "Make the control plane reachable only on its private endpoint (apply and kubectl from inside the VPC)."
  default     = false
}

# ---------------------------------------------------------------------------------------------
# Cluster and node pool
# ---------------------------------------------------------------------------------------------

variable "release_channel" {
  type        = string
  description = "GKE release channel."
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "node_machine_type" {
  type        = string
  description = "Machine type of the node pool (e.g. e2-standard-4)."
  default     = "e2-standard-4"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*-(standard|highmem|highcpu|custom)(-[0-9]+)+$", var.node_machine_type))
    error_message = "node_machine_type must be a machine type such as e2-standard-4 or n2-highmem-8."
  }
}

variable "node_min_count" {
  type        = number
  description = "Minimum number of nodes per zone in the autoscaling node pool."
  default     = 1

  validation {
    condition     = var.node_min_count >= 0 && var.node_min_count <= 100 && floor(var.node_min_count) == var.node_min_count
    error_message = "node_min_count must be an integer between 0 and 100."
  }
}

variable "node_max_count" {
  type        = number
  description = "Maximum number of nodes per zone in the autoscaling node pool."
  default     = 3

  validation {
    condition     = var.node_max_count >= 1 && var.node_max_count <= 100 && floor(var.node_max_count) == var.node_max_count
    error_message = "node_max_count must be an integer between 1 and 100."
  }

  validation {
    condition     = var.node_max_count >= var.node_min_count
    error_message = "node_max_count must be at least node_min_count."
  }
}

variable "node_disk_size_gb" {
  type        = number
  description = "Boot disk size of each node, in GB."
  default     = 50

  validation {
    condition     = var.node_disk_size_gb >= 20 && var.node_disk_size_gb <= 1000
    error_message = "node_disk_size_gb must be between 20 and 1000."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the cluster and the database instance against terraform destroy."
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Cloud SQL
# ---------------------------------------------------------------------------------------------

variable "db_tier" {
  type        = string
  description = "Cloud SQL machine tier (e.g. db-custom-2-7680)."
  default     = "db-custom-2-7680"

  validation {
    condition     = can(regex("^db-(custom-[0-9]+-[0-9]+|perf-optimized-N-[0-9]+|f1-micro|g1-small)$", var.db_tier))
    error_message = "db_tier must be a Cloud SQL tier such as db-custom-2-7680 or db-perf-optimized-N-2."
  }
}

variable "db_version" {
  type        = string
  description = "Cloud SQL PostgreSQL major version."
  default     = "POSTGRES_17"

  validation {
    condition     = contains(["POSTGRES_15", "POSTGRES_16", "POSTGRES_17", "POSTGRES_18"], var.db_version)
    error_message = "db_version must be one of POSTGRES_15 to POSTGRES_18."
  }
}

variable "db_high_availability" {
  type        = bool
  description = "REGIONAL (synchronous standby in another zone) instead of ZONAL."
  default     = false
}

variable "db_disk_size_gb" {
  type        = number
  description = "Initial database disk size in GB (grows automatically)."
  default     = 20

  validation {
    condition     = var.db_disk_size_gb >= 10 && var.db_disk_size_gb <= 65536
    error_message = "db_disk_size_gb must be between 10 and 65536."
  }
}

variable "db_backup_retention_count" {
  type        = number
  description = "Number of daily automated backups kept."
  default     = 7

  validation {
    condition     = var.db_backup_retention_count >= 1 && var.db_backup_retention_count <= 365
    error_message = "db_backup_retention_count must be between 1 and 365."
  }
}

variable "db_ssl_mode" {
  type        = string
  description = <<-EOT
    Cloud SQL ssl_mode. ENCRYPTED_ONLY: pods connect to the private IP with sslmode=require.
    TRUSTED_CLIENT_CERTIFICATE_REQUIRED: mutual TLS, pods connect through the Cloud SQL Auth Proxy
    (sidecar, using db_connection_name); the workload identities then get roles/cloudsql.client.
  EOT
  default     = "ENCRYPTED_ONLY"

  validation {
    condition     = contains(["ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"], var.db_ssl_mode)
    error_message = "db_ssl_mode must be ENCRYPTED_ONLY or TRUSTED_CLIENT_CERTIFICATE_REQUIRED (unencrypted connections are never allowed)."
  }
}

# ---------------------------------------------------------------------------------------------
# Artifacts bucket
# ---------------------------------------------------------------------------------------------

variable "artifacts_noncurrent_days" {
  type        = number
  description = "Days a replaced or deleted artifact version is kept before it is removed."
  default     = 30

  validation {
    condition     = var.artifacts_noncurrent_days >= 1
    error_message = "artifacts_noncurrent_days must be at least 1."
  }
}

# ---------------------------------------------------------------------------------------------
# Kubernetes workloads (must match deploy/k8s)
# ---------------------------------------------------------------------------------------------

variable "k8s_namespace" {
  type        = string
  description = "Kubernetes namespace of loopml's workloads."
  default     = "loopml"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a valid Kubernetes DNS label."
  }
}

variable "k8s_service_accounts" {
  type = object({
    server     = string
    controller = string
    mlflow     = string
  })
  description = "Kubernetes service account names of the serving replicas, the controller and the MLflow tracking server."
  default = {
    server     = "loopml-server"
    controller = "loopml-controller"
    mlflow     = "loopml-mlflow"
  }

  validation {
    condition     = alltrue([for n in values(var.k8s_service_accounts) : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", n))])
    error_message = "Every service account name must be a valid Kubernetes DNS label."
  }
}

# ---------------------------------------------------------------------------------------------
# Public host and continuous deployment (deploy.yml)
# ---------------------------------------------------------------------------------------------

variable "host" {
  type        = string
  description = "Public DNS name of the loopml API (the Ingress host): HOST in the kustomize_env output."

  validation {
    condition     = can(regex("^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.host))
    error_message = "host must be a lowercase DNS name such as api.example.com."
  }
}

variable "github_repository" {
  type        = string
  description = "GitHub repository (owner/name) whose deploy.yml may deploy to this cluster through GitHub OIDC."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "github_repository must look like owner/name."
  }
}

variable "github_deploy_environment" {
  type        = string
  description = "GitHub environment of the deploy.yml job that deploys to this cluster (production or staging): only its OIDC tokens get the deploy identity."
  default     = "production"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,255}$", var.github_deploy_environment))
    error_message = "github_deploy_environment must be a GitHub environment name (letters, digits, _ . -)."
  }
}
