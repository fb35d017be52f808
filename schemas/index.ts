export * from './common.js';
export * from './request.js';
export * from './pipeline.js';
export * from './receipt.js';
export * from './dlq.js';
export * from './directory.js';
export * from './bounds.js';
export * from './api.js';
