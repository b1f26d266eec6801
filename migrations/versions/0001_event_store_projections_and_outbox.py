"""event store, projections and outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

import outbox.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('appointments',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('customer_email', sa.String(length=320), nullable=False),
    sa.Column('service', sa.String(length=200), nullable=False),
    sa.Column('starts_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('booked_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('reminder_sent_at', outbox.types.UTCDateTime(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_appointments_starts_at', 'appointments', ['starts_at'], unique=False)
    op.create_table('campaigns',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('recipients_count', sa.Integer(), nullable=False),
    sa.Column('created_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('launched_at', outbox.types.UTCDateTime(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('domain_events',
    sa.Column('position', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('aggregate_type', sa.String(length=64), nullable=False),
    sa.Column('aggregate_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('payload', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.Column('metadata', sa.Text(), nullable=False),
    sa.Column('occurred_at', outbox.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('position'),
    sa.UniqueConstraint('aggregate_id', 'version', name='uq_domain_events_aggregate_version'),
    sa.UniqueConstraint('event_id')
    )
    op.create_table('interactions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('visitor_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('product_id', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', outbox.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_interactions_tenant_occurred', 'interactions', ['tenant_id', 'occurred_at'], unique=False)
    op.create_table('orders',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('customer_email', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('total_cents', sa.Integer(), nullable=False),
    sa.Column('lines', sa.Text(), nullable=False),
    sa.Column('placed_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('paid_at', outbox.types.UTCDateTime(), nullable=True),
    sa.Column('payment_ref', sa.String(length=128), nullable=True),
    sa.Column('cancelled_at', outbox.types.UTCDateTime(), nullable=True),
    sa.Column('cancel_reason', sa.String(length=200), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_orders_status_placed_at', 'orders', ['status', 'placed_at'], unique=False)
    op.create_table('products',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('price_cents', sa.Integer(), nullable=False),
    sa.Column('stock_quantity', sa.Integer(), nullable=False),
    sa.Column('image_path', sa.String(length=500), nullable=True),
    sa.Column('blurhash', sa.String(length=100), nullable=True),
    sa.Column('created_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_products_tenant_id'), 'products', ['tenant_id'], unique=False)
    op.create_table('tenants',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('contact_email', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('plan', sa.String(length=32), nullable=False),
    sa.Column('limits', sa.Text(), nullable=False),
    sa.Column('profile', sa.Text(), nullable=False),
    sa.Column('onboarded_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('approved_at', outbox.types.UTCDateTime(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('campaign_recipients',
    sa.Column('campaign_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ),
    sa.PrimaryKeyConstraint('campaign_id', 'email')
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('topic', sa.String(length=249), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('shard', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.Column('headers', sa.Text(), nullable=False),
    sa.Column('created_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('available_at', outbox.types.UTCDateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('published_at', outbox.types.UTCDateTime(), nullable=True),
    sa.Column('kafka_partition', sa.Integer(), nullable=True),
    sa.Column('kafka_offset', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_outbox_key_id', 'outbox', ['key', 'id'], unique=False)
    op.create_index('ix_outbox_status_shard_id', 'outbox', ['status', 'shard', 'id'], unique=False)



def downgrade() -> None:

    op.drop_index('ix_outbox_status_shard_id', table_name='outbox')
    op.drop_index('ix_outbox_key_id', table_name='outbox')
    op.drop_table('outbox')
    op.drop_table('campaign_recipients')
    op.drop_table('tenants')
    op.drop_index(op.f('ix_products_tenant_id'), table_name='products')
    op.drop_table('products')
    op.drop_index('ix_orders_status_placed_at', table_name='orders')
    op.drop_table('orders')
    op.drop_index('ix_interactions_tenant_occurred', table_name='interactions')
    op.drop_table('interactions')
    op.drop_table('domain_events')
    op.drop_table('campaigns')
    op.drop_index('ix_appointments_starts_at', table_name='appointments')
    op.drop_table('appointments')

