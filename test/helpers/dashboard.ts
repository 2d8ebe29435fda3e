/*
 * The Grafana dashboard's queries (dashboards/dfs.json): which `dfs_*` metrics it names,
 * so that a test can hold them to a real scrape (e2e/metrics for the file, e2e/chart for
 * the copy the Helm chart ships).
 */
export interface Dashboard {
  uid: string;
  panels: Array<{ targets?: Array<{ expr: string }> }>;
}

/** Every metric name a panel's query names. */
export function dashboardMetricNames(dashboard: Dashboard): Set<string> {
  return new Set(dashboard.panels.flatMap((p) => p.targets ?? []).flatMap((t) => [...t.expr.matchAll(/\bdfs_[a-z0-9_]+/g)].map((m) => m[0])));
}
