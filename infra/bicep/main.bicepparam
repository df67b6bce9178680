// Parameters of main.bicep: fill in the four marked FILL IN, review the rest (each shows the
// template's default), then deploy as infra/README.md says:
//   export MONGODB_URI='mongodb+srv://<user>:<password>@<cluster>.mongodb.net/'
//   az deployment group create -g <rg> -n mongo-fabric-mirror --parameters infra/bicep/main.bicepparam
// The MongoDB URI is read from the environment when the command runs: never write it here.
using 'main.bicep'

// --- The mirror ------------------------------------------------------------------------------

// FILL IN: the mirrored database's landing zone: the workspace id and the mirrored database's
// item id (GUIDs, in its URL in Fabric, or its "Landing zone" in the item's settings).
param landingZoneUrl = 'https://onelake.dfs.fabric.microsoft.com/00000000-0000-0000-0000-000000000000/00000000-0000-0000-0000-000000000000/Files/LandingZone'

// FILL IN (in the environment, not here): the MongoDB connection string, stored in Key Vault only.
param mongodbUri = readEnvironmentVariable('MONGODB_URI')

// FILL IN: the database to mirror, and its collections: all, one name, a comma list or a JSON
// list ["c1","c2"].
param mongodbDatabase = 'shop'
param mongodbCollections = 'all'

// Change capture: the timer's NCRONTAB schedule (six fields, seconds first; every minute) and
// how many seconds each tick streams (below the schedule's period, at most 600).
param changeSchedule = '0 * * * * *'
param changeBudgetSeconds = 55

// DEBUG, INFO, WARNING or ERROR.
param logLevel = 'INFO'

// --- Names and place -------------------------------------------------------------------------

// 3-8 lower-case letters or digits, in every resource name (with a suffix unique to the group).
param baseName = 'mfm'

// FILL IN: a region that offers Flex Consumption with Python (az functionapp
// list-flexconsumption-locations --runtime python -o table); with an Atlas private endpoint, the
// Atlas cluster's region. This value wins over the resource group's region, so use the same
// region you gave `az group create --location`.
param location = 'westeurope'

param tags = {
  application: 'mongo-fabric-mirror'
}

// --- Function app (Flex Consumption) ---------------------------------------------------------

// 3.11, 3.12 or 3.13: one the region offers for Flex Consumption.
param pythonVersion = '3.13'

// 512, 2048 or 4096 MB per instance.
param instanceMemoryMB = 2048

// Each instance opens its own MongoDB connections: keep this under what the Atlas tier allows.
param maximumInstanceCount = 40

// --- Storage, Key Vault, monitoring ----------------------------------------------------------

// Standard_LRS, Standard_ZRS, Standard_GRS or Standard_GZRS.
param storageSku = 'Standard_LRS'

// Purge protection cannot be turned off once on.
param enableKeyVaultPurgeProtection = false
param keyVaultSoftDeleteRetentionInDays = 90

// true: Application Insights accepts only Entra-authenticated telemetry (the host sends it so).
param appInsightsDisableLocalAuth = true
param logRetentionInDays = 30

// --- Network (optional) ----------------------------------------------------------------------

// To reach Atlas over Private Link: paste the private link service resource id (or alias) Atlas
// shows when you add an Azure private endpoint, and the endpoint name you typed there. Setting
// the id turns the VNet on.
param enableVnet = false
param vnetAddressPrefix = '10.40.0.0/16'
param appSubnetPrefix = '10.40.0.0/24'
param privateEndpointSubnetPrefix = '10.40.1.0/24'
param atlasPrivateLinkServiceId = ''
param atlasPrivateEndpointName = 'pe-mfm-atlas'

// Or, for an Atlas IP access list: true gives the app one static outbound IP (a NAT gateway on
// its subnet; output outboundIpAddress, the address to admit). Turns the VNet on.
param enableNatGateway = false
