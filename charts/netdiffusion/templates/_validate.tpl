{{/*
Value combinations the schema cannot express: rendering (install, upgrade, template, lint) fails with
a message naming the values to change. Included at the top of configmap.yaml, which always renders.
*/}}
{{- define "netdiffusion.validateValues" -}}
{{- $v := .Values -}}
{{- if and (not $v.mlflow.enabled) (not $v.endpoints.mlflowTrackingUri) -}}
{{- fail "mlflow.enabled=false needs endpoints.mlflowTrackingUri (the external MLflow tracking server, e.g. http://mlflow.tracking.svc:5000); without it the service and the refresh runs would get an empty MLFLOW_TRACKING_URI" -}}
{{- end -}}
{{- if $v.serve.enabled -}}
{{- $sharedState := and $v.serve.persistence.enabled (eq $v.serve.persistence.accessMode "ReadWriteMany") -}}
{{- if not $sharedState -}}
{{- $state := ternary (printf "a %s PersistentVolumeClaim" $v.serve.persistence.accessMode) "an emptyDir" (eq $v.serve.persistence.enabled true) -}}
{{- if and $v.serve.autoscaling.enabled (gt (int $v.serve.autoscaling.maxReplicas) 1) -}}
{{- fail (printf "serve.autoscaling.enabled=true (up to %d replicas) needs shared job state: set serve.persistence.enabled=true and serve.persistence.accessMode=ReadWriteMany (the state is %s, so every pod would have its own SQLite job store: job lookups 404 on the other pods, quotas count per pod)" (int $v.serve.autoscaling.maxReplicas) $state) -}}
{{- end -}}
{{- if and (not $v.serve.autoscaling.enabled) (gt (int $v.serve.replicaCount) 1) -}}
{{- fail (printf "serve.replicaCount=%d needs shared job state: set serve.persistence.enabled=true and serve.persistence.accessMode=ReadWriteMany, or keep serve.replicaCount=1 (the state is %s, so every pod would have its own SQLite job store: job lookups 404 on the other pods, quotas count per pod)" (int $v.serve.replicaCount) $state) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $v.mlflow.enabled (not $v.mlflow.externalDatabase.enabled) (gt (int $v.mlflow.replicaCount) 1) -}}
{{- fail (printf "mlflow.replicaCount=%d needs mlflow.externalDatabase.enabled=true (with mlflow.externalDatabase.existingSecret): each replica of the built-in SQLite store would keep its own runs and model registry; keep mlflow.replicaCount=1 otherwise" (int $v.mlflow.replicaCount)) -}}
{{- end -}}
{{- end -}}
