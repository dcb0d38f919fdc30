/** A PrimeVue Column's pass-through naming its body cells, so that a table with class
 * "cards-on-phone" (style.css) shows `label` before each value when it becomes cards on a phone. */
export function cell(label: string): { bodyCell: Record<string, string> } {
  return { bodyCell: { 'data-label': label } }
}
