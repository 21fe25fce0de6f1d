// API du TP : écritures sur le primary (via HAProxy), lectures sur la replica,
// cache Redis en cache-aside sur GET /products/:id.
const express = require('express');
const { Pool } = require('pg');
const { createClient } = require('redis');

const env = process.env;

// --- PostgreSQL -------------------------------------------------------------
const db = {
  user: env.DB_USER || 'app',
  password: env.DB_PASSWORD || 'app_pwd',
  database: env.DB_NAME || 'appdb',
  connectionTimeoutMillis: 2000, // base arrêtée : erreur en 2 s au lieu d'attendre
  query_timeout: 3000,           // côté Node : une requête ne bloque jamais plus de 3 s
  statement_timeout: 2500,       // côté PostgreSQL (annulée, donc pas écrite)
  idleTimeoutMillis: 10000,      // on ferme avant le "timeout client 30s" de HAProxy
};
// Écritures : toujours par HAProxy, c'est lui qui sait où est le primary.
// Après la bascule (F3) l'API n'a rien à changer : le Pool jette les connexions
// cassées et en ouvre de nouvelles vers le nouveau primary.
const primary = new Pool({ ...db, host: env.DB_WRITE_HOST || '127.0.0.1', port: Number(env.DB_WRITE_PORT || 5439) });
// Lectures : directement sur la replica.
const replica = new Pool({ ...db, host: env.DB_READ_HOST || '127.0.0.1', port: Number(env.DB_READ_PORT || 5433) });
// Sans ces handlers, une connexion inactive coupée (base arrêtée) ferait planter Node.
primary.on('error', (err) => console.error('[pg primary]', err.message));
replica.on('error', (err) => console.error('[pg replica]', err.message));

// --- Redis ------------------------------------------------------------------
// TTL de 60 s : un produit change rarement, donc 60 s de cache évitent la plupart
// des lectures en base ; et si une invalidation est ratée (Redis coupé pendant un
// PUT) une valeur périmée ne vit pas plus d'une minute.
const CACHE_TTL_S = 60;
const REDIS_TIMEOUT_MS = 200; // au-delà on fait comme si Redis n'était pas là

const redis = createClient({
  url: env.REDIS_URL || 'redis://127.0.0.1:6379',
  // Redis coupé : les commandes échouent tout de suite au lieu d'attendre la reconnexion
  disableOfflineQueue: true,
  socket: { connectTimeout: 500, reconnectStrategy: (retries) => Math.min(retries * 100, 2000) },
});
let redisDown = false;
redis.on('error', (err) => { // obligatoire, sinon node-redis fait planter le process
  if (!redisDown) console.warn('[redis] indisponible, on continue sans cache :', err.message);
  redisDown = true;
});
redis.on('ready', () => { redisDown = false; console.log('[redis] connecté'); });
redis.connect().catch(() => {}); // pas de await : l'API démarre même si Redis est arrêté

// Une commande Redis qui échoue ou qui dépasse 200 ms ne bloque pas la requête HTTP.
async function cache(command) {
  if (!redis.isReady) return null;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('timeout Redis')), REDIS_TIMEOUT_MS);
  });
  try {
    return await Promise.race([command(), timeout]);
  } catch (err) {
    console.warn('[redis]', err.message);
    return null;
  } finally {
    clearTimeout(timer);
  }
}

// --- Routes -----------------------------------------------------------------
const SELECT = 'SELECT id, name, price_cents, updated_at FROM products WHERE id = $1';

async function readProduct(id) {
  try {
    return (await replica.query(SELECT, [id])).rows[0];
  } catch (err) {
    // Replica en panne (E2) : choix du repli sur le primary, via HAProxy.
    console.warn('[pg replica] indisponible, lecture sur le primary :', err.message);
    return (await primary.query(SELECT, [id])).rows[0];
  }
}

function parseId(raw) {
  return /^[1-9][0-9]{0,9}$/.test(raw) && Number(raw) <= 2147483647 ? Number(raw) : null;
}

function dbError(res, err) {
  console.error('[pg]', err.message);
  if (err.message === 'Query read timeout') {
    // la requête est peut-être passée : on ne peut pas dire "refusé"
    return res.status(504).json({ error: 'base de données trop lente, résultat inconnu' });
  }
  res.set('Retry-After', '5').status(503).json({ error: 'base de données indisponible' });
}

const app = express();
app.use(express.json());

app.get('/health', (req, res) => res.json({ status: 'ok', redis: redis.isReady }));

app.get('/products/:id', async (req, res) => {
  const id = parseId(req.params.id);
  if (!id) return res.status(400).json({ error: 'id invalide' });
  const key = `product:${id}`;

  const cached = await cache(() => redis.get(key)); // 1. lecture Redis
  if (cached) return res.set('X-Cache', 'HIT').json(JSON.parse(cached));

  let product;
  try {
    product = await readProduct(id); // 2. miss -> replica
  } catch (err) {
    return dbError(res, err);
  }
  if (!product) return res.status(404).json({ error: 'produit introuvable' });
  await cache(() => redis.set(key, JSON.stringify(product), { EX: CACHE_TTL_S })); // 3. mise en cache
  res.set('X-Cache', 'MISS').json(product);
});

app.put('/products/:id', async (req, res) => {
  const id = parseId(req.params.id);
  const { name, price_cents: price } = req.body || {};
  if (!id) return res.status(400).json({ error: 'id invalide' });
  if (typeof name !== 'string' || name.trim() === '' || !Number.isInteger(price) || price < 0 || price > 2147483647) {
    return res.status(400).json({ error: 'attendu : {"name": texte non vide, "price_cents": entier >= 0}' });
  }
  let rows;
  try {
    ({ rows } = await primary.query(
      'UPDATE products SET name = $1, price_cents = $2, updated_at = NOW() WHERE id = $3 ' +
      'RETURNING id, name, price_cents, updated_at', [name, price, id]));
  } catch (err) {
    return dbError(res, err);
  }
  if (rows.length === 0) return res.status(404).json({ error: 'produit introuvable' });
  await cache(() => redis.del(`product:${id}`)); // invalidation (D3)
  res.json(rows[0]);
});

// JSON invalide ou autre erreur d'express : réponse JSON plutôt qu'une page HTML
app.use((err, req, res, next) => {
  res.status(err.status || 500).json({ error: err.type === 'entity.parse.failed' ? 'JSON invalide' : err.message });
});

const PORT = Number(env.PORT || 3000);
app.listen(PORT, () => console.log(`API sur http://localhost:${PORT}`));
