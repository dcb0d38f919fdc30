import { createRouter, createWebHistory } from 'vue-router'

export const routes = [
  { path: '/', name: 'Dashboard', icon: 'pi pi-gauge', component: () => import('./views/DashboardView.vue') },
  { path: '/search', name: 'Search', icon: 'pi pi-search', component: () => import('./views/SearchView.vue') },
  { path: '/downloads', name: 'Downloads', icon: 'pi pi-download', component: () => import('./views/DownloadsView.vue') },
  { path: '/library', name: 'Library', icon: 'pi pi-book', component: () => import('./views/LibraryView.vue') },
  { path: '/running', name: 'Running', icon: 'pi pi-play-circle', component: () => import('./views/RunningView.vue') },
  { path: '/engines', name: 'Engines', icon: 'pi pi-wrench', component: () => import('./views/EnginesView.vue') },
  { path: '/settings', name: 'Settings', icon: 'pi pi-cog', component: () => import('./views/SettingsView.vue') },
]

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    ...routes.map(({ path, name, component }) => ({ path, name, component })),
    // a model's page and the like are added by their views' owners above this line
    { path: '/:unknown(.*)*', name: 'NotFound', component: () => import('./views/NotFoundView.vue') },
  ],
})
