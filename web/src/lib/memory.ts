/** The estimator's memory categories (`parts` of a device in `POST /api/models/{id}/estimate`),
 * named and coloured for the stacked memory bar; the order is the bar's. */
export const PARTS: { key: string; label: string; color: string }[] = [
  { key: 'model', label: 'weights', color: '#3b82f6' },
  { key: 'kv', label: 'KV cache', color: '#22c55e' },
  { key: 'rs', label: 'recurrent state', color: '#14b8a6' },
  { key: 'output', label: 'output', color: '#a855f7' },
  { key: 'compute', label: 'compute', color: '#f59e0b' },
  { key: 'mmproj', label: 'projector (vision)', color: '#ec4899' },
  { key: 'draft', label: 'draft model', color: '#64748b' },
]
