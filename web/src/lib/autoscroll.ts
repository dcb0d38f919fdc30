import { nextTick, watch, type Ref, type WatchSource } from 'vue'

/** Keep a log box scrolled to its end whenever ``source`` (e.g. its line count) changes. */
export function useAutoScroll(source: WatchSource<unknown>, box: Ref<HTMLElement | null>): void {
  watch(source, async () => {
    await nextTick()
    if (box.value) box.value.scrollTop = box.value.scrollHeight
  })
}
